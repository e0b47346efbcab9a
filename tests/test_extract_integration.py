"""The real offline encoders (MiniLM-L6, DINOv2 ViT-S/14 at 224 px) through the whole extract command."""
import json

import numpy as np
import pytest
from PIL import Image

from extract_helpers import run_cli
from pipeline.cache.format import load_images, load_text
from pipeline.cache.verify import verify_cache


@pytest.mark.integration
def test_real_offline_encoders_on_four_images(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    modes = {"a.png": "RGB", "b.png": "L", "c.png": "RGBA", "d.jpg": "RGB"}  # grayscale/alpha go to RGB
    lines = []
    for k, (name, mode) in enumerate(modes.items()):
        size = (int(rng.integers(100, 300)), int(rng.integers(100, 300)))
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).convert(mode).save(tmp_path / "img" / name)
        for j, text in enumerate(["a red circle above a blue square", "shapes on a noisy background"]):
            lines.append({"image": name, "caption": text, "caption_id": f"{k}-{j}"})
    (tmp_path / "caps.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    r = run_cli(["--captions", str(tmp_path / "caps.jsonl"), "--images", str(tmp_path / "img"),
                 "--cache", str(tmp_path / "cache"), "--device", "cpu", "--num-workers", "0", "--no-progress"])
    assert r.exit_code == 0, r.output
    split = tmp_path / "cache" / "all"
    text, images = load_text(split), load_images(split)
    assert images.patches.shape == (4, 256, 384) and images.prefix.shape == (4, 1, 384)  # 16x16 grid + CLS
    assert images.grid == (16, 16) and text.states.shape[1] == 384
    assert text.caption_ids == [f"{k}-{j}" for k in range(4) for j in range(2)]
    assert np.isfinite(images.patches.astype(np.float32)).all() and float(np.abs(images.patches).max()) > 0.1
    # the same caption on two images gets the same states: the text pass does not depend on the image
    np.testing.assert_array_equal(text.states[text.offsets[0]:text.offsets[1]], text.states[text.offsets[2]:text.offsets[3]])
    fp = json.loads((split / "manifest.json").read_text())["fingerprint"]
    assert fp["image"]["encoder"]["pos_embed_resampling"] and len(fp["text"]["encoder"]["weights_sha256"]) == 64
    assert verify_cache(split) == []
