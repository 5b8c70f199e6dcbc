"""Video and image reading and writing (PyAV, Pillow)."""
