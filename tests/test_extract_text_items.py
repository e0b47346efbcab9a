"""The text runner on pre-tokenised items (how GLUE pairs and SQuAD windows reuse it)."""
import numpy as np
import pytest

from extract_helpers import shard_bytes, tiny_text_folder
from pipeline.cache.format import load_text
from pipeline.cache.verify import verify_cache
from pipeline.encoders import Tokens, load_text_encoder
from pipeline.errors import CacheError, DataError
from pipeline.extraction import TextItem, build_text_cache


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_text_encoder(tiny_text_folder(tmp_path_factory), max_length=32)


def _pairs(encoder, n=11):
    """Sentence pairs as [CLS] a [SEP] b [SEP], built by hand as a GLUE reader would."""
    rng = np.random.default_rng(1)
    words = "the cat sat on a mat while dogs ran far away".split()
    items = []
    for i in range(n):
        a, b = (" ".join(rng.choice(words, rng.integers(1, 9))) for _ in range(2))
        ta, tb = encoder.tokenize([a, b])
        ids = np.concatenate([ta.ids, tb.ids[1:]]).astype(np.int32)
        spans = np.zeros((len(ids), 2), np.int32)
        items.append(TextItem(f"pair-{i:02d}", "", Tokens(ids, spans, False)))
    return items


def test_items_are_stored_in_id_order_whatever_order_and_batching(tmp_path, encoder):
    items = _pairs(encoder)
    a = build_text_cache(items, encoder, tmp_path / "a", source={"task": "toy"}, shard_size=4, batch_size=3,
                         progress=False)
    assert a.complete and not a.up_to_date
    text = load_text(tmp_path / "a")
    assert text.caption_ids == sorted(i.item_id for i in items) and text.image_ids == [""] * 11
    for it in items:  # token ids stored exactly; states those of the encoder on that item alone
        k = text.caption_ids.index(it.item_id)
        rows = slice(text.offsets[k], text.offsets[k + 1])
        assert np.array_equal(text.token_ids[rows], it.tokens.ids)
        alone = encoder.encode([it.tokens])[0]
        np.testing.assert_allclose(text.states[rows].astype(np.float32), alone, atol=2e-2, rtol=1e-2)
    build_text_cache(list(reversed(items)), encoder, tmp_path / "b", source={"task": "toy"}, shard_size=4,
                     batch_size=3, progress=False)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b")
    assert verify_cache(tmp_path / "a") == []


def test_rerun_is_up_to_date_and_other_source_fails(tmp_path, encoder):
    items = _pairs(encoder, 5)
    build_text_cache(items, encoder, tmp_path, source={"task": "toy"}, shard_size=4, progress=False)
    again = build_text_cache(items, encoder, tmp_path, source={"task": "toy"}, shard_size=4, progress=False)
    assert again.up_to_date and again.manifest["totals"]["text"]["items"] == 5
    with pytest.raises(CacheError, match=r"split\.source\.task"):
        build_text_cache(items, encoder, tmp_path, source={"task": "other"}, shard_size=4, progress=False)
    with pytest.raises(DataError, match="duplicate"):
        build_text_cache(items + items[:1], encoder, tmp_path / "dup", source={}, progress=False)
