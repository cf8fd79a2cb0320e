"""Pixels to faces: decoding, detection, alignment, quality, embedding, the model registry and sessions.

No stores, no Ray.
"""
