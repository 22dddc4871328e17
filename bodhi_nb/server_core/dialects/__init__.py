"""API dialect adapters: OpenAI Responses, Anthropic Messages and Gemini, each translated
to and from OpenAI chat completions, the gateway's own language (see base.py)."""
