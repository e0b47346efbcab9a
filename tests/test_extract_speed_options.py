"""The image encoder's speed options in the cache fingerprint: a cache made with them is never taken for
one made without, and caches made before they existed still match the defaults."""
import json

import pytest
import torch

from extract_helpers import extract_args, make_dataset, run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_images=3, per_image=1)


def _image_only(data, cache, *extra):
    return extract_args(*data, cache, "unused-text-model", "--modality", "image", *extra)


def _image_fp(cache):
    return json.loads((cache / "train" / "manifest.json").read_text())["fingerprint"]["image"]


def test_defaults_keep_the_fingerprint_of_earlier_caches(tmp_path, data):
    r = run_cli(_image_only(data, tmp_path))
    assert r.exit_code == 0, r.output
    fp = _image_fp(tmp_path)
    assert set(fp) == {"model", "image_size", "encoder"}
    assert "compiled" not in fp["encoder"] and "weights_dtype" not in fp["encoder"]


def test_cast_weights_is_part_of_the_fingerprint(tmp_path, data):
    r = run_cli(_image_only(data, tmp_path, "--compute-dtype", "bfloat16"))
    assert r.exit_code == 0, r.output
    fp = _image_fp(tmp_path)
    assert fp["cast_weights"] is True and fp["encoder"]["weights_dtype"] == "bfloat16"
    r = run_cli(_image_only(data, tmp_path, "--compute-dtype", "bfloat16", "--no-image-cast-weights"))
    assert r.exit_code == 2 and "image.cast_weights" in r.output and "Traceback" not in r.output


def test_compile_is_part_of_the_fingerprint_and_falls_back(tmp_path, data, monkeypatch):
    def no_compiler(fn, **kwargs):  # compilation failing as it does without a C++ compiler (fast)
        def run(*a):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(RuntimeWarning, match="running it eagerly"):
        r = run_cli(_image_only(data, tmp_path, "--image-compile"))
    assert r.exit_code == 0, r.output
    fp = _image_fp(tmp_path)
    assert fp["compile"] is True and "compiled" not in fp["encoder"]  # asked for; what ran was eager
    r = run_cli(_image_only(data, tmp_path, "--no-image-compile"))
    assert r.exit_code == 2 and "image.compile" in r.output


def test_decode_workers_auto_follows_the_device():
    from stages.extract import decode_workers
    from pipeline.errors import ConfigError

    assert decode_workers("auto", torch.device("cpu")) == 0
    assert 1 <= decode_workers("auto", torch.device("cuda")) <= 8
    assert decode_workers(2, torch.device("cpu")) == 2 and decode_workers("3", torch.device("cpu")) == 3
    for bad in (-1, "many", True, 1.5):
        with pytest.raises(ConfigError, match="num_workers must be 'auto' or an integer >= 0"):
            decode_workers(bad, torch.device("cpu"))


def test_num_workers_option_reaches_the_decoder(tmp_path, data):
    r = run_cli(_image_only(data, tmp_path / "auto", "--num-workers", "auto"))
    assert r.exit_code == 0, r.output
    r = run_cli(_image_only(data, tmp_path / "one", "--num-workers", "1"))
    assert r.exit_code == 0, r.output
    r = run_cli(_image_only(data, tmp_path / "bad", "--num-workers", "lots"))
    assert r.exit_code != 0 and "num_workers must be 'auto'" in r.output
