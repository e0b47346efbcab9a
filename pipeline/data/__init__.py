"""Datasets: caption-file loaders (COCO, Karpathy, JSONL), image decoding, the synthetic default."""
from pipeline.data.images import load_rgb
from pipeline.data.loaders import load_split, resolve_image

__all__ = ["load_split", "load_rgb", "resolve_image"]
