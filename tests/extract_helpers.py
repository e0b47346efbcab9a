"""Shared by the extraction and cache tests: a tiny image-caption dataset and the tiny encoders' options."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.encoders.tiny import TINY_IMAGE_MODEL, TINY_IMAGE_SIZE

WORDS = "red blue green small large circle square triangle left right above below near the a of and".split()


def make_dataset(root: Path, n_images: int = 6, per_image: int = 2, seed: int = 0, long_every: int = 0) -> tuple[Path, Path]:
    """PNG images of varied sizes and a JSONL manifest with captions of mixed length.
    `long_every=k` makes every k-th caption far longer than any max_length used in the tests."""
    rng = np.random.default_rng(seed)
    images = Path(root) / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines, n = [], 0
    for i in range(n_images):
        w, h = int(rng.integers(20, 60)), int(rng.integers(20, 60))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(images / f"im{i:03d}.png")
        for j in range(per_image):
            n += 1
            length = 80 if long_every and n % long_every == 0 else int(rng.integers(2, 12))
            text = " ".join(rng.choice(WORDS, length))
            lines.append({"image": f"im{i:03d}.png", "image_id": f"im{i:03d}", "caption_id": f"c{i:03d}_{j}",
                          "caption": text, "split": "train"})
    captions = Path(root) / "captions.jsonl"
    captions.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return captions, images


def extract_args(captions: Path, images: Path, cache: Path, text_model: str, *extra: str) -> list[str]:
    return ["--captions", str(captions), "--images", str(images), "--cache", str(cache), "--split", "train",
            "--text-model", text_model, "--image-model", TINY_IMAGE_MODEL, "--image-size", str(TINY_IMAGE_SIZE),
            "--shard-size", "4", "--text-batch-size", "3", "--image-batch-size", "3", "--num-workers", "0",
            "--max-length", "16", "--device", "cpu", "--no-progress", *extra]


def shard_bytes(split_dir: Path) -> dict[str, bytes]:
    """Every file that must be byte-identical between two runs: all but run.json (timings) and the lock,
    the two files .dvcignore keeps out of DVC's hash."""
    return {p.relative_to(split_dir).as_posix(): p.read_bytes() for p in sorted(Path(split_dir).rglob("*"))
            if p.is_file() and p.name not in ("run.json", ".lock")}


def tiny_text_folder(tmp_path_factory) -> str:
    """The tiny BERT, written once per test session (a few MB)."""
    from pipeline.encoders.tiny import make_tiny_text_model

    folder = tmp_path_factory.getbasetemp() / "tiny-bert"
    if not (folder / "config.json").exists():
        make_tiny_text_model(folder)
    return str(folder)


def run_cli(args: list[str]):
    from typer.testing import CliRunner

    from stages.extract import app

    return CliRunner().invoke(app, args)
