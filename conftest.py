"""Root conftest: plugins must be declared at the top level."""

pytest_plugins = ["pytest_jupyter.jupyter_server"]
