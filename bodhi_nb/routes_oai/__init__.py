"""Layer 5: OpenAI-compatible endpoints (chat completions, models)."""
