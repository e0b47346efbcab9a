"""Blockwise scoring reads each caption's [CLS] state and each image's global token from the right rows,
whether the split is in memory or streamed from several shards."""
import numpy as np
import pytest
import torch

from pipeline.evaluation.scoring import encode_split
from pipeline.modules import StageTwoModules
from pipeline.training.reader import SplitReader
from stage2_fixtures import D_T, D_V, make_split


@pytest.mark.parametrize("budget", [1.0, 0.0])
def test_encode_split_pairs_every_caption_with_its_own_images_row(tmp_path, budget):
    data = make_split(tmp_path / "s", n_images=9, captions_per_image=3, shard_size=5)   # several shards each
    reader = SplitReader(tmp_path / "s", memory_budget_gb=budget)
    torch.manual_seed(0)
    model = StageTwoModules(D_T, D_V, d_g=4, hidden=8).eval()
    t0, vbar, gold = encode_split(model, reader, block=2, device="cpu")
    # data["image_ids"] is per caption (the image each caption names); the split holds 9 images.
    assert len(t0) == len(data["caption_ids"]) and len(vbar) == reader.num_images == 9
    with torch.no_grad():
        for c, states in enumerate(data["states"]):
            h0 = torch.from_numpy(states[:1].astype(np.float16).astype(np.float32))
            assert torch.allclose(t0[c], model.text_global(h0)[0], atol=1e-6)
            row = gold[c]
            assert reader.image_ids[row] == data["image_ids"][c]
            p0 = torch.from_numpy(data["prefix"][row, :1].astype(np.float16).astype(np.float32))
            assert torch.allclose(vbar[row], model.f_v(p0)[0], atol=1e-6)
