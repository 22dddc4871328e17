"""Layer 4: management REST (api models, aliases, OpenAPI document)."""
