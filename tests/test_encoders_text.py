"""Text encoder: tokens with offsets and truncation, padded batches equal to single captions, layers, hashes."""
import numpy as np
import pytest
import torch

from pipeline.encoders import Tokens, load_text_encoder
from pipeline.encoders.tiny import make_tiny_text_model
from pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    return make_tiny_text_model(tmp_path_factory.mktemp("tiny_text"))


@pytest.fixture(scope="module")
def tiny(tiny_name):
    return load_text_encoder(tiny_name, max_length=12)


def test_tokens_have_specials_offsets_and_no_padding(tiny):
    text = "A red circle, left of the square."
    (tok,) = tiny.tokenize([text])
    assert isinstance(tok, Tokens) and tok.ids.dtype == np.int32 and tok.spans.dtype == np.int32
    assert tok.ids[0] == tiny.tokenizer.cls_token_id and tok.ids[-1] == tiny.tokenizer.sep_token_id
    assert tok.spans.shape == (len(tok.ids), 2) and not tok.truncated
    assert tuple(tok.spans[0]) == (0, 0) and tuple(tok.spans[-1]) == (0, 0)
    words = [text[a:b].lower() for a, b in tok.spans[1:-1]]
    assert words[:4] == ["a", "red", "circle", ","]


def test_long_caption_is_truncated_to_max_length_and_flagged(tiny):
    long, short = tiny.tokenize(["one two three four five six seven eight nine ten eleven twelve thirteen", ""])
    assert long.truncated and len(long.ids) == tiny.max_length
    assert long.ids[-1] == tiny.tokenizer.sep_token_id and tuple(long.spans[-1]) == (0, 0)
    assert not short.truncated and list(short.ids) == [tiny.tokenizer.cls_token_id, tiny.tokenizer.sep_token_id]


def test_padded_batch_equals_each_caption_alone(tiny):
    toks = tiny.tokenize(["a small green triangle above a large red square", "blue", "two circles"])
    together = tiny.encode(toks)
    for tok, state in zip(toks, together):
        (alone,) = tiny.encode([tok])
        assert state.dtype == np.float32 and state.shape == (len(tok.ids), tiny.dim) == alone.shape
        np.testing.assert_allclose(state, alone, atol=1e-5)
    assert tiny.encode([]) == []


def test_layer_selects_that_hidden_state(tiny_name, tiny):
    (tok,) = tiny.tokenize(["a yellow star"])
    ids = torch.from_numpy(tok.ids.astype(np.int64))[None]
    with torch.inference_mode():
        ref = tiny.model(input_ids=ids, output_hidden_states=True).hidden_states
    for layer in (0, 1, -1):
        enc = load_text_encoder(tiny_name, layer=layer, max_length=12)
        np.testing.assert_allclose(enc.encode([tok])[0], ref[layer][0].numpy(), atol=1e-5)
    with pytest.raises(ConfigError, match="layer 3 out of range"):
        load_text_encoder(tiny_name, layer=3)


def test_tiny_model_is_deterministic_and_fingerprinted(tmp_path, tiny):
    again = load_text_encoder(make_tiny_text_model(tmp_path / "again"), max_length=12)
    assert again.weights_sha256() == tiny.weights_sha256()
    fp = tiny.fingerprint()
    assert set(fp) == {"name", "weights_sha256", "layer", "max_length", "tokenizer_sha256", "compute_dtype"}
    assert fp["tokenizer_sha256"] == again.tokenizer_sha256()
    tiny.tokenizer("x", truncation=True, max_length=5, padding="max_length")  # leaves state behind
    assert tiny.tokenizer_sha256() == fp["tokenizer_sha256"]


def test_bfloat16_compute_is_close_and_float16_on_cpu_refused(tiny_name, tiny):
    toks = tiny.tokenize(["a red circle", "a blue square next to it"])
    bf16 = load_text_encoder(tiny_name, max_length=12, compute_dtype="bfloat16")
    for a, b in zip(tiny.encode(toks), bf16.encode(toks)):
        assert b.dtype == np.float32
        np.testing.assert_allclose(a, b, atol=0.1)
    with pytest.raises(ConfigError, match="float16"):
        load_text_encoder(tiny_name, compute_dtype="float16", device="cpu")


def test_missing_models_name_the_model_and_offline_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match=r"'no-such-org/no-such-bert'.*HF_HUB_OFFLINE"):
        load_text_encoder("no-such-org/no-such-bert")
    with pytest.raises(ConfigError, match="unknown offline name"):
        load_text_encoder("offline:bert-large")
    with pytest.raises(ConfigError, match="max_length"):
        load_text_encoder("offline:minilm", max_length=1000)


@pytest.mark.integration
def test_offline_minilm():
    enc = load_text_encoder("offline:minilm")
    assert enc.dim == 384 and enc.layer == -1
    toks = enc.tokenize(["Hello world", "a dog on a red sofa", "a puppy on a crimson couch", "tax law reform"])
    assert list(toks[0].ids) == [101, 7592, 2088, 102]
    states = enc.encode(toks)
    mean = [s[1:-1].mean(0) / np.linalg.norm(s[1:-1].mean(0)) for s in states]
    # a sentence-embedding model: paraphrases sit closer than unrelated sentences
    assert float(mean[1] @ mean[2]) > float(mean[1] @ mean[3])
    assert len(enc.fingerprint()["weights_sha256"]) == 64


def test_models_without_segment_ids_work(tmp_path, tiny_name):
    """DistilBERT-style models take no token_type_ids; the encoder must not pass them."""
    import shutil
    from pathlib import Path

    from transformers import DistilBertConfig, DistilBertModel

    for f in Path(tiny_name).glob("*tok*"):
        shutil.copy(f, tmp_path)
    shutil.copy(Path(tiny_name) / "vocab.txt", tmp_path)
    config = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    DistilBertModel(config).save_pretrained(tmp_path)
    enc = load_text_encoder(str(tmp_path), max_length=12)
    (state,) = enc.encode(enc.tokenize(["a red circle"]))
    assert state.shape == (5, 32) and enc.dim == 32


def test_segment_ids_reach_the_model(tmp_path):
    """Sentence pairs carry segment ids: the second segment's states differ from an all-zero encoding."""
    import numpy as np
    from pipeline.encoders.text import Tokens
    enc = load_text_encoder(make_tiny_text_model(tmp_path / "tiny"))
    t = enc.tokenize(["a red circle above a blue square"])[0]
    types = np.zeros_like(t.ids)
    types[4:] = 1
    plain = enc.encode([t])[0]
    paired = enc.encode([Tokens(t.ids, t.spans, t.truncated, type_ids=types)])[0]
    assert not np.allclose(plain[4:], paired[4:])
    zeros = enc.encode([Tokens(t.ids, t.spans, t.truncated, type_ids=np.zeros_like(t.ids))])[0]
    np.testing.assert_array_equal(plain, zeros)
