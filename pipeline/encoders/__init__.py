"""Frozen encoders for stage one: text (BERT family, one hidden layer) and image (timm patch tokens).

    load_text_encoder(name, layer=-1, max_length=64, device="cpu", compute_dtype="float32") -> TextEncoder
    load_image_encoder(name, image_size=224, device="cpu", compute_dtype="float32") -> ImageEncoder

Offline defaults: `offline:minilm`, `offline:dinov2-vits14` (see offline.py). The tiny random encoders of
the tests live in tiny.py, imported from there: they are not among the encoders a user picks from.
"""
from pipeline.encoders.image import ImageEncoder, load_image_encoder
from pipeline.encoders.preprocess import Preprocess
from pipeline.encoders.text import TextEncoder, Tokens, load_text_encoder

__all__ = ["ImageEncoder", "Preprocess", "TextEncoder", "Tokens", "load_image_encoder", "load_text_encoder"]
