"""`groundedbert export`: what the folder holds, that it replaces an older one atomically, and that a bad
folder is one line naming the file and the reason. Tiny random text encoder (tests/test_grounded_encoder.py
checks the vectors, in a fresh offline process too)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from pipeline.encoders.tiny import make_tiny_text_model
from pipeline.errors import ExportError
from pipeline.grounded import GroundedEncoder, GroundedModel
from pipeline.grounded import export as export_module
from pipeline.training.checkpoint import BEST, checkpoint_dir
from stages.cli import app
from test_grounded_encoder import CACHE_FINGERPRINT, make_run

METRICS = {"split": "test", "captions": 24, "images": 8,
           "pointing": {"plan": {"token": {"accuracy": 0.6875, "chance": 0.0725, "trials": 80}}},
           "retrieval": {"t2i": {"R@1": 0.4321, "chance@1": 0.125}}, "matching": {"accuracy": 0.9123}}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run = make_run(root, make_tiny_text_model(root / "tiny-bert"), layer=1, d_t=32, metrics=METRICS)
    out = root / "exports" / "tiny"
    result = CliRunner().invoke(app, ["export", "--run", str(run), "--out", str(out), "--pooling", "cls",
                                      "--max-length", "40"])
    assert result.exit_code == 0, result.output
    return {"root": root, "run": run, "out": out}


def bad_copy(exported, tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    shutil.copytree(exported["out"], folder)
    return folder


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    for dotted, value in changes.items():
        node = config
        *head, last = dotted.split("__")
        for k in head:
            node = node[k]
        node[last] = value
    (folder / "config.json").write_text(json.dumps(config))


def test_the_folder_holds_weights_tokenizer_config_and_model_card(exported):
    out, run = exported["out"], exported["run"]
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors",
                                                      "run_metrics.json", "tokenizer.json", "tokenizer_config.json"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    assert {oct(p.stat().st_mode & 0o777) for p in out.iterdir()} == {"0o644"}
    config = json.loads((out / "config.json").read_text())
    checkpoint = torch.load(checkpoint_dir(run) / BEST, weights_only=True)
    assert config["model_type"] == "groundedbert" and config["format_version"] == 1
    assert (config["layer"], config["pooling"], config["max_length"]) == (1, "cls", 40)
    assert config["compute_dtype"] == "float32"
    assert (config["d_t"], config["d_g"], config["fg_hidden"], config["fg_layernorm"]) == (32, 8, 16, True)
    assert config["text_config"]["hidden_size"] == 32 and "_name_or_path" not in config["text_config"]
    assert config["run_config"] == json.loads(json.dumps(checkpoint["config"]))
    assert config["cache_fingerprint"] == CACHE_FINGERPRINT
    assert config["source"] == {"run": str(run), "checkpoint": BEST, "epoch": 2, "step": 7}
    assert config["text_fingerprint"]["layer"] == 1 and len(config["text_fingerprint"]["weights_sha256"]) == 64
    assert config["text_fingerprint"]["compute_dtype"] == "float32" and len(config["fg_sha256"]) == 64
    tensors = load_file(out / "model.safetensors")
    f_g = {k[len("f_g."):]: v for k, v in tensors.items() if k.startswith("f_g.")}
    assert {f"f_g.{k}" for k in f_g} == {k for k in checkpoint["model"] if k.startswith("f_g.")}
    for k, v in f_g.items():
        assert torch.equal(v, checkpoint["model"][f"f_g.{k}"])
    assert not any(k.startswith("text_model.pooler") for k in tensors)
    card = (out / "README.md").read_text()
    assert "hidden_states[1]" in card and "0.688" in card and "0.432" in card and "0.912" in card
    assert "epoch 2, step 7" in card and json.loads((out / "run_metrics.json").read_text()) == METRICS


def test_the_loaded_folder_keeps_the_exported_settings(exported):
    enc = GroundedEncoder.from_pretrained(exported["out"], device="cpu")
    assert (enc.pooling, enc.text.max_length, enc.text.layer, enc.dim) == ("cls", 40, 1, 40)
    assert enc.info["epoch"] == 2
    model = GroundedModel.from_pretrained(exported["out"])
    assert [type(m).__name__ for m in model.f_g] == ["Linear", "GELU", "Linear", "LayerNorm"]
    from transformers import AutoModel
    assert type(AutoModel.from_pretrained(exported["out"])) is GroundedModel


def test_export_replaces_an_older_folder_and_a_crash_leaves_it_untouched(exported, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    export_module.export_run(exported["run"], out, pooling="mean", max_length=32)
    (out / "stale.txt").write_text("from before")
    export_module.export_run(exported["run"], out, pooling="mean", max_length=32)
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def crash(*args, **kwargs):
        raise RuntimeError("killed while writing the card")
    monkeypatch.setattr(export_module, "model_card", crash)
    with pytest.raises(RuntimeError, match="killed"):
        export_module.export_run(exported["run"], out, pooling="cls", max_length=32)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_the_export_is_byte_identical_across_runs(exported, tmp_path):
    a = export_module.export_run(exported["run"], tmp_path / "a", pooling="mean", max_length=32)
    b = export_module.export_run(exported["run"], tmp_path / "b", pooling="mean", max_length=32)
    assert {p.name: p.read_bytes() for p in a.iterdir()} == {p.name: p.read_bytes() for p in b.iterdir()}


def _drop(name):
    return lambda folder: (folder / name).unlink()


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _alter_text_weights(folder):
    tensors = load_file(folder / "model.safetensors")
    tensors["text_model.embeddings.word_embeddings.weight"][5, 0] += 1.0
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _drop_f_g_tensor(folder):
    tensors = load_file(folder / "model.safetensors")
    del tensors["f_g.2.bias"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _negate_f_g_weight(folder):
    tensors = load_file(folder / "model.safetensors")
    tensors["f_g.0.weight"] = -tensors["f_g.0.weight"]  # same shape, dtype and key: only the hash sees it
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def _alter_tokenizer(folder):
    spec = json.loads((folder / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["rxd"] = vocab.pop("red")
    (folder / "tokenizer.json").write_text(json.dumps(spec))


BAD = {
    "missing config": (_drop("config.json"), "config.json: missing; not a folder written by `groundedbert export`"),
    "config not json": (lambda f: (f / "config.json").write_text("{oops"), "config.json: not valid JSON"),
    "another model": (lambda f: edit_config(f, model_type="bert"),
                      "config.json: model_type 'bert', expected 'groundedbert'"),
    "another version": (lambda f: edit_config(f, format_version=2),
                        "config.json: format_version 2, this code reads 1"),
    "field missing": (lambda f: edit_config(f, layer=None), "config.json: lacks layer"),
    "d_t disagrees": (lambda f: edit_config(f, d_t=48),
                      "config.json: d_t is 48 but text_config.hidden_size is 32"),
    "layer out of range": (lambda f: edit_config(f, layer=5),
                           "config.json: layer 5 out of range for a text encoder of 2 layers"),
    "unknown pooling": (lambda f: edit_config(f, pooling="max"), "config.json: pooling 'max' is not one of"),
    "d_g disagrees": (lambda f: edit_config(f, d_g=6),
                      "model.safetensors: tensor f_g.2.weight is [8, 16] but config.json implies [6, 16]"),
    "hidden disagrees": (lambda f: edit_config(f, fg_hidden=12),
                         "model.safetensors: tensor f_g.0.weight is [16, 32] but config.json implies [12, 32]"),
    "text config disagrees": (lambda f: edit_config(f, text_config__intermediate_size=48),
                              "model.safetensors: tensor text_model.encoder.layer.0.intermediate.dense.weight is [64, 32]"),
    "missing weights": (_drop("model.safetensors"), "model.safetensors: missing (the text encoder's and f_g's weights)"),
    "truncated weights": (_truncate, "model.safetensors: cannot be read"),
    "missing tensor": (_drop_f_g_tensor,
                       "model.safetensors: lacks 1 tensor(s) the configuration needs, e.g. f_g.2.bias"),
    "altered weights": (_alter_text_weights,
                        "model.safetensors: the text encoder's weights differ from those the export recorded"),
    "altered f_g": (_negate_f_g_weight, "model.safetensors: f_g's weights differ from those the export recorded "
                                        "in config.json (fg_sha256)"),
    "layer altered": (lambda f: edit_config(f, layer=0),
                      "config.json: layer is 0 but the export recorded 1 (text_fingerprint.layer)"),
    "compute dtype altered": (lambda f: edit_config(f, compute_dtype="bfloat16"),
                              "config.json: compute_dtype is 'bfloat16' but the export recorded 'float32'"),
    "fingerprint deleted": (lambda f: edit_config(f, text_fingerprint=None), "config.json: lacks text_fingerprint"),
    "fingerprint emptied": (lambda f: edit_config(f, text_fingerprint={}), "config.json: lacks text_fingerprint"),
    "fingerprint hash deleted": (lambda f: edit_config(f, text_fingerprint__weights_sha256=None),
                                 "config.json: lacks text_fingerprint.weights_sha256"),
    "f_g hash deleted": (lambda f: edit_config(f, fg_sha256=None), "config.json: lacks fg_sha256"),
    "missing tokenizer": (_drop("tokenizer.json"), "tokenizer.json: missing (the tokenizer)"),
    "altered tokenizer": (_alter_tokenizer, "tokenizer.json: the tokenizer differs from the one the export recorded"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_folder_is_one_line_naming_the_file_and_the_reason(exported, tmp_path, case):
    spoil, reason = BAD[case]
    folder = bad_copy(exported, tmp_path)
    spoil(folder)
    with pytest.raises(ExportError) as e:
        GroundedEncoder.from_pretrained(folder, device="cpu")
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"file {folder}/"), message
    assert reason in message, message


def test_a_run_trained_on_another_text_encoder_is_refused(tmp_path):
    model = make_tiny_text_model(tmp_path / "tiny-bert")
    run = make_run(tmp_path, model, layer=1, d_t=32)
    path = checkpoint_dir(run) / BEST
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["cache"] = {"text": {"encoder": {"weights_sha256": "0" * 64, "layer": 1}}}
    torch.save(checkpoint, path)
    with pytest.raises(ExportError, match=r"best.pt: the run was trained on states of another text encoder .*"
                                          r"weights_sha256 \(cache: '0000"):
        export_module.export_run(run, tmp_path / "out", pooling="mean", max_length=32)
    assert not (tmp_path / "out").exists()


def test_a_missing_folder_and_a_bad_run_exit_2_with_one_line(exported, tmp_path):
    with pytest.raises(ExportError, match=r"^folder .*nowhere: not found"):
        GroundedEncoder.from_pretrained(tmp_path / "nowhere")
    runner = CliRunner()
    r = runner.invoke(app, ["export", "--run", str(tmp_path / "no-run"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "checkpoint not found" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(app, ["export", "--run", str(exported["run"]), "--out", str(tmp_path / "x"), "--pooling", "max"])
    assert r.exit_code == 2 and "pooling must be one of" in r.output, r.output
    assert not (tmp_path / "x").exists()


def test_a_float16_run_on_the_cpu_is_one_line_naming_the_dtype_and_a_device(tmp_path):
    run = make_run(tmp_path, make_tiny_text_model(tmp_path / "tiny-bert"), layer=1, d_t=32)
    path = checkpoint_dir(run) / BEST
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["config"]["extract"]["compute_dtype"] = "float16"
    torch.save(checkpoint, path)
    r = CliRunner().invoke(app, ["export", "--run", str(run), "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert f"{path}: the run's text encoder computes in float16" in r.output and "--device cuda" in r.output, r.output
    assert not (tmp_path / "out").exists()


def test_the_device_does_not_change_the_folder(exported, tmp_path):
    """--device only moves the computing; on a CPU-only machine auto is the CPU and this is the DVC stage's case."""
    a = export_module.export_run(exported["run"], tmp_path / "a", pooling="mean", max_length=32, device="cpu")
    b = export_module.export_run(exported["run"], tmp_path / "b", pooling="mean", max_length=32)  # auto
    assert {p.name: p.read_bytes() for p in a.iterdir()} == {p.name: p.read_bytes() for p in b.iterdir()}


def test_an_interrupted_swap_keeps_the_old_export(tmp_path, monkeypatch):
    # Interrupted between moving the old folder aside and moving the new one in: the old one comes back.
    out = tmp_path / "exp"
    out.mkdir()
    (out / "config.json").write_text("old")
    real_replace = export_module.os.replace

    def interrupted(src, dst):
        if Path(src).name.startswith(".tmp-"):
            raise KeyboardInterrupt
        real_replace(src, dst)
    monkeypatch.setattr(export_module.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with export_module.atomic_dir(out) as tmp:
            (tmp / "config.json").write_text("new")
    assert (out / "config.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
