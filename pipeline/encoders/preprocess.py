"""Image preprocessing, as a plain picklable callable (it runs in DataLoader worker processes).

The geometry is fixed, whatever the model's own crop_pct says (crop_pct is forced to 1.0):
    1. resize so the shorter side is exactly S = image_size, the longer side to floor(S * long / short)
       (torchvision's rule, which timm's eval transform uses);
    2. center-crop S x S, offsets round((new - S) / 2);
    3. to float in [0, 1], then (x - mean) / std per channel.
Interpolation, mean and std come from timm's data config for the model. No margin is thrown away
beyond the center crop, and `to_input` maps original pixel coordinates through exactly these steps,
which is what the pointing-game metric needs to put a word's box onto the patch grid.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


class Preprocess:
    def __init__(self, image_size: int, interpolation: str, mean, std):
        if interpolation not in _RESAMPLE:
            interpolation = "bicubic"  # timm's "random" picks one per call; evaluation must be fixed
        self.image_size, self.interpolation = int(image_size), interpolation
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        s = self.image_size
        if width <= height:
            return s, int(s * height / width)
        return int(s * width / height), s

    def to_input(self, width: int, height: int) -> tuple[float, float, int, int]:
        """(sx, sy, left, top): an original pixel coordinate (x, y) lands at (x * sx - left, y * sy - top)
        in the S x S input; divide by S / grid to get the patch cell."""
        nw, nh = self.resized_size(width, height)
        left = int(round((nw - self.image_size) / 2.0))
        top = int(round((nh - self.image_size) / 2.0))
        return nw / width, nh / height, left, top

    def crop(self, img: Image.Image) -> Image.Image:
        """The S x S RGB image the encoder sees, before normalisation (the figures draw on it too)."""
        if img.mode != "RGB":
            img = img.convert("RGB")
        w, h = img.size
        nw, nh = self.resized_size(w, h)
        _, _, left, top = self.to_input(w, h)
        s = self.image_size
        return img.resize((nw, nh), resample=_RESAMPLE[self.interpolation]).crop((left, top, left + s, top + s))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = self.crop(img)
        x = np.asarray(img, dtype=np.float32) / 255.0
        x = (x - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def describe(self) -> dict:
        return {"interpolation": self.interpolation, "mean": list(self.mean), "std": list(self.std),
                "crop": f"resize-short-side-{self.image_size}+center-crop-{self.image_size}"}
