"""GroundedEncoder: what encode returns, and that it is the probe's computation (from a run and from an
export loaded in a fresh process with no network). Tiny random text encoder, a run saved as `groundedbert
train` saves it, at a layer that is not the last; one integration test with the real offline MiniLM."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModel

from pipeline.config import resolve
from pipeline.downstream.features import glue_items, tokenize_pairs
from pipeline.downstream.glue import GlueExample
from pipeline.downstream.tasks import cached_bank
from pipeline.encoders.tiny import make_tiny_text_model
from pipeline.grounded import GroundedEncoder
from pipeline.grounded.export import export_run
from pipeline.grounded.vectors import TokenFeatures, pool
from pipeline.modules import StageTwoModules
from pipeline.training.checkpoint import BEST, checkpoint_dir, save
from stages import downstream

REPO = Path(__file__).resolve().parent.parent
TEXTS = ["a small red circle left of a blue square", "crimson", "",
         "the cobalt lozenge is partly hidden behind the large green triangle above it"]
CACHE_FINGERPRINT = {"text": {"model": "tiny", "layer": 1}, "storage_dtype": "float16"}


def make_run(root: Path, text_model: str, *, layer: int, d_t: int, d_g: int = 8, hidden: int = 16, seed: int = 0,
             metrics: dict | None = None) -> Path:
    """A run folder as `groundedbert train` leaves it (best.pt holding weights, resolved config, cache identity)."""
    config = resolve(overrides=[f"extract.text_model={text_model}", f"extract.text_layer={layer}",
                                f"train.d_g={d_g}", f"train.hidden={hidden}"])
    torch.manual_seed(seed)
    model = StageTwoModules(d_t=d_t, d_v=12, d_g=d_g, hidden=hidden)
    with torch.no_grad():  # LayerNorm starts at (1, 0); make it as non-trivial as the rest
        model.f_g[3].weight.normal_(1.0, 0.3)
        model.f_g[3].bias.normal_(0.0, 0.3)
    run = Path(root) / "run"
    save(checkpoint_dir(run) / BEST, model=model, optimizer=torch.optim.AdamW(model.parameters()),
         generator=torch.Generator(), step=7, epoch=2, config=config, cache=CACHE_FINGERPRINT, best_val=0.5,
         bad_epochs=0)
    (run / "config.json").write_text(json.dumps(config))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def probe_vectors(run: Path, texts: list[str], cache_root: Path) -> dict[str, torch.Tensor]:
    """What probe mode computes for `texts` as a one-sentence GLUE task: the encoder and f_g of
    stages/downstream.py (`_setup`), states through the probe's float16 cache (`cached_bank`), then
    `[h; f_g(h)]` (TokenFeatures) and the sentence vector (`pool`), as probe_glue does."""
    _, cfg, encoder, f_g, _, _ = downstream._setup(run, None, ["downstream.device=cpu"], seeds=None, pooling=None,
                                                   max_length_key="max_length")
    examples = [GlueExample(f"s-{k}", text, None, 0) for k, text in enumerate(texts)]
    items = glue_items(examples, tokenize_pairs(examples, encoder.tokenizer, cfg["max_length"]))
    bank = cached_bank(items, encoder, cache_root, task="api", split="train", source={"texts": texts}, cfg=cfg)
    feats = TokenFeatures(encoder.dim, f_g)
    rows, segments, first = bank.gather(np.arange(len(texts)))
    t = feats(rows)
    return {"t": t, "segments": segments, "pooled": pool(t, segments, first, len(texts), cfg["pooling"]),
            "h16": bank.gather(np.arange(len(texts)))[0]}


def assert_matches_probe(out, probe: dict, texts: list[str]) -> None:
    """Token vectors and sentence vectors agree to float16 storage precision; h rounds to the cached h."""
    t = out.t[out.attention_mask]
    assert t.shape == probe["t"].shape
    scale = float(probe["t"].abs().max())
    tol = dict(rtol=0, atol=4 * 2 ** -10 * scale)   # a few float16 ulps of the largest value
    torch.testing.assert_close(t.cpu(), probe["t"], **tol)
    torch.testing.assert_close(out.pooled.cpu(), probe["pooled"], **tol)
    h16 = out.h[out.attention_mask].cpu().half().float()   # float16 as the cache stores it: to one ulp
    torch.testing.assert_close(h16, probe["h16"], rtol=2 ** -10, atol=2 ** -24)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounded")
    model = make_tiny_text_model(root / "tiny-bert")
    run = make_run(root, model, layer=1, d_t=32)   # layer 1 of 2: the export must not take the last one
    return {"root": root, "model": model, "run": run}


def test_encode_returns_h_g_their_concatenation_mask_offsets_and_pooled(world):
    enc = GroundedEncoder.from_run(world["run"], device="cpu", pooling="mean")
    out = enc.encode(TEXTS, batch_size=2)
    n_tokens = [len(enc.text.tokenizer(x)["input_ids"]) for x in TEXTS]
    width = max(n_tokens)
    assert (enc.d_t, enc.d_g, enc.dim) == (32, 8, 40)
    assert out.t.shape == (4, width, 40) and out.h.shape == (4, width, 32) and out.g.shape == (4, width, 8)
    assert out.attention_mask.sum(1).tolist() == n_tokens and out.offsets.shape == (4, width, 2)
    assert out.pooled.shape == (4, 40) and out.truncated == [False] * 4
    assert (out.t[~out.attention_mask] == 0).all() and (out.input_ids[~out.attention_mask] == 0).all()
    # h is hidden_states[1] of the text model, not the last layer; g is f_g(h)
    bert = AutoModel.from_pretrained(world["model"]).eval()
    ids = out.input_ids[:1, : n_tokens[0]]
    with torch.no_grad():
        states = bert(input_ids=ids, output_hidden_states=True).hidden_states
        f_g = StageTwoModules(d_t=32, d_v=12, d_g=8, hidden=16)
        f_g.load_state_dict(torch.load(checkpoint_dir(world["run"]) / BEST, weights_only=True)["model"])
        h = out.h[0, : n_tokens[0]]
        torch.testing.assert_close(h, states[1][0], rtol=1e-5, atol=1e-5)
        assert (h - states[-1][0]).abs().max() > 1e-2
        torch.testing.assert_close(out.g[0, : n_tokens[0]], f_g.f_g(h), rtol=1e-5, atol=1e-5)
    # character offsets point into the text; specials get (0, 0)
    words = [TEXTS[0][a:b] for a, b in out.offsets[0, 1: n_tokens[0] - 1].tolist()]
    assert words == enc.text.tokenizer.tokenize(TEXTS[0]) and out.offsets[0, 0].tolist() == [0, 0]
    # mean pooling over every real token, specials included; cls: the first token
    torch.testing.assert_close(out.pooled[3], out.t[3, : n_tokens[3]].mean(0))
    cls = GroundedEncoder.from_run(world["run"], device="cpu", pooling="cls").encode(TEXTS[:1])
    torch.testing.assert_close(cls.pooled[0], out.t[0, 0])


def test_batching_pairs_truncation_and_empty_input(world):
    enc = GroundedEncoder.from_run(world["run"], device="cpu", max_length=12)
    one = enc.encode(TEXTS, batch_size=1)
    many = enc.encode(TEXTS, batch_size=64)
    torch.testing.assert_close(one.t, many.t, rtol=1e-5, atol=1e-5)   # padding changes nothing
    assert one.truncated == [False, False, False, True] and one.attention_mask.sum(1).max() == 12
    assert one.input_ids[3, 11] == enc.text.tokenizer.sep_token_id
    pair = enc.encode(TEXTS[:1], ["crimson"])
    assert pair.token_type_ids[0, : pair.attention_mask[0].sum()].tolist()[-3:] == [0, 1, 1]
    assert enc.encode([]).t.shape == (0, 0, 40) and enc.encode([]).pooled.shape == (0, 40)
    assert enc.encode("crimson").t.shape[0] == 1
    head = torch.nn.Linear(enc.dim, 2)   # the vectors feed a trainable module (no inference tensors)
    head(one.pooled).sum().backward()
    assert head.weight.grad is not None and not one.t.requires_grad
    with pytest.raises(ValueError, match="text_pairs has 1 entries for 2 texts"):
        enc.encode(TEXTS[:2], ["x"])


def test_from_run_gives_the_probe_vectors(world, tmp_path):
    enc = GroundedEncoder.from_run(world["run"], device="cpu")
    assert enc.pooling == resolve()["downstream"]["pooling"]
    assert_matches_probe(enc.encode(TEXTS), probe_vectors(world["run"], TEXTS, tmp_path / "cache"), TEXTS)


FRESH_PROCESS = """
import socket, sys, torch
def no_network(*a, **k):
    raise OSError("network access attempted")
socket.socket.connect = no_network
socket.create_connection = no_network
import pipeline.grounded
# the public encoder loads neither the GLUE / SQuAD code nor the extraction engine
loaded = sorted(m for m in sys.modules if m.startswith(("pipeline.downstream", "pipeline.extraction")))
from pipeline.grounded import GroundedEncoder
enc = GroundedEncoder.from_pretrained(sys.argv[1], device="cpu")
out = enc.encode({texts!r}, batch_size=3)
# as a transformers user calls it: the tokenizer's padded batch, then the model; and the pipeline
from transformers import AutoModel, AutoTokenizer, pipeline
model, tok = AutoModel.from_pretrained(sys.argv[1]), AutoTokenizer.from_pretrained(sys.argv[1])
batch = tok({texts!r}, return_tensors="pt", padding=True, truncation=True, max_length=model.config.max_length)
with torch.no_grad():
    hf = model(**batch)
    as_tuple = model(**batch, return_dict=False, output_hidden_states=True)
fe = pipeline("feature-extraction", model=sys.argv[1], device="cpu")
torch.save({{"t": out.t, "mask": out.attention_mask, "pooled": out.pooled, "offsets": out.offsets, "loaded": loaded,
            "hf_t": hf.last_hidden_state, "hf_h": hf.h, "hf_g": hf.g, "hf_pooled": hf.pooler_output,
            "hf_mask": batch["attention_mask"], "tuple_len": len(as_tuple), "hidden_states": len(as_tuple[-1]),
            "class": type(model).__name__, "pipeline_first": torch.tensor(fe({texts!r}[0]))}}, sys.argv[2])
"""


def test_export_loads_in_a_fresh_offline_process_and_gives_the_probe_vectors(tmp_path):
    # A run of its own whose text model folder is deleted after the export: the folder must stand alone.
    model = make_tiny_text_model(tmp_path / "tiny-bert")
    run = make_run(tmp_path, model, layer=1, d_t=32, seed=3)
    probe = probe_vectors(run, TEXTS, tmp_path / "cache")
    folder = export_run(run, tmp_path / "export", pooling="mean", max_length=128)
    shutil.rmtree(tmp_path / "tiny-bert")
    shutil.rmtree(run)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO),
           "HF_HOME": str(tmp_path / "empty-hf-home")}
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS.format(texts=TEXTS), str(folder),
                             str(tmp_path / "out.pt")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)

    class Out:  # what assert_matches_probe reads of an Encoded
        t, attention_mask, pooled = got["t"], got["mask"], got["pooled"]
        h = got["t"][..., :32]
    assert_matches_probe(Out, probe, TEXTS)
    assert "auto_map" not in json.loads((folder / "config.json").read_text())   # nothing to trust remotely
    assert got["loaded"] == []
    # AutoModel's forward gives encode's vectors: [h; g] per real token, zero at padding, and the pooled vector
    assert got["class"] == "GroundedModel" and torch.equal(got["hf_mask"].bool(), got["mask"])
    torch.testing.assert_close(got["hf_t"], got["t"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["hf_pooled"], got["pooled"], rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([got["hf_h"], got["hf_g"]], -1), got["hf_t"]) and got["hf_g"].shape[-1] == 8
    assert (got["hf_t"][~got["mask"]] == 0).all()
    # return_dict=False: (last_hidden_state, pooler_output, h, g, hidden_states), embeddings + 2 layers
    assert (got["tuple_len"], got["hidden_states"]) == (5, 3)
    # the feature-extraction pipeline: last_hidden_state of one text, batch dimension first
    n = int(got["mask"][0].sum())
    torch.testing.assert_close(got["pipeline_first"], got["t"][:1, :n], rtol=1e-5, atol=1e-5)


@pytest.mark.integration
def test_offline_minilm_at_a_non_last_layer_round_trips_through_export(tmp_path):
    run = make_run(tmp_path, "offline:minilm", layer=-2, d_t=384, d_g=16, hidden=32)
    probe = probe_vectors(run, TEXTS, tmp_path / "cache")
    folder = export_run(run, tmp_path / "export", pooling="mean", max_length=128)
    loaded = GroundedEncoder.from_pretrained(folder, device="cpu")
    assert loaded.text.layer == -2 and loaded.text.model.config.num_hidden_layers == 6
    out = loaded.encode(TEXTS)
    assert_matches_probe(out, probe, TEXTS)
    torch.testing.assert_close(out.t, GroundedEncoder.from_run(run, device="cpu").encode(TEXTS).t, rtol=0, atol=0)
