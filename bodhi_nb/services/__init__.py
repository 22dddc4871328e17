"""Layers 2-3: everything that does I/O (store, upstream HTTP, local files, llama.cpp)."""
