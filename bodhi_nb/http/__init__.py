"""The HTTP wing: the Jupyter server extension, its handlers, the route table and the OpenAPI document.

Handlers parse, call an operation and serialise (docs/ARCHITECTURE.md).
"""
