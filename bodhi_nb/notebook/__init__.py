"""The notebook wing: the Bodhi facade, map, usage frames, widgets, magics and jupyter-ai set-up.

It reaches the lower floors only through the operations layer (docs/ARCHITECTURE.md).
"""
