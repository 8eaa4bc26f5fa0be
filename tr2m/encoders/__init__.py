"""The three frozen encoders: relative depth, image features and caption embeddings."""
from .base import FrozenEncoder, load_or_build
from .image import ImageEncoder
from .relative import RelativeDepth
from .text import TextEncoder, tokenize

__all__ = ["FrozenEncoder", "ImageEncoder", "RelativeDepth", "TextEncoder", "load_or_build", "tokenize"]
