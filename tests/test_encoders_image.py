"""Image encoder: preprocessing geometry, ViT token split, CNN maps as patches, FLOPs, names and errors."""
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.encoders import Preprocess, load_image_encoder
from pipeline.encoders.flops import counted_flops
from pipeline.encoders.tiny import TINY_CNN_MODEL, TINY_IMAGE_MODEL, TINY_IMAGE_SIZE
from pipeline.errors import ConfigError


@pytest.fixture(scope="module")
def vit():
    return load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE)


def test_preprocess_resizes_short_side_then_center_crops():
    pre = Preprocess(32, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    # 100 x 50: short side 50 -> 32, long side 100 -> 64, crop columns 16..48
    img = np.zeros((50, 100, 3), dtype=np.uint8)
    img[:, 25:75] = 255  # the middle half is white: exactly the cropped window
    x = pre(Image.fromarray(img))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert float(x[:, :, 2:30].min()) > 0.9  # white -> (1 - 0.5) / 0.5 = 1
    assert pre.resized_size(100, 50) == (64, 32) and pre.to_input(100, 50) == (0.64, 0.64, 16, 0)
    assert pre.to_input(40, 90)[2:] == (0, int(round((72 - 32) / 2)))
    gray = pre(Image.fromarray(np.full((7, 9), 128, dtype=np.uint8)))  # converted to RGB
    assert gray.shape == (3, 32, 32)
    assert pickle.loads(pickle.dumps(pre))(Image.fromarray(img)).equal(x)  # DataLoader workers get a copy


def test_vit_splits_prefix_and_patches(vit):
    assert vit.grid == (4, 4) and vit.num_prefix_tokens == 1 and vit.dim == 32
    pixels = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    patches, prefix = vit.encode(pixels)
    assert patches.shape == (2, 16, 32) and prefix.shape == (2, 1, 32) and patches.dtype == torch.float32
    with torch.inference_mode():
        tokens = vit.model.forward_features(pixels)  # timm applies the final norm here
    torch.testing.assert_close(prefix, tokens[:, :1])
    torch.testing.assert_close(patches, tokens[:, 1:])
    # the final LayerNorm has no learned shift yet (random init), so each token has mean ~0, std ~1
    assert float(patches.mean(-1).abs().max()) < 1e-4


def test_registers_follow_cls_in_prefix():
    enc = load_image_encoder(TINY_IMAGE_MODEL + "&reg_tokens=2", image_size=TINY_IMAGE_SIZE)
    patches, prefix = enc.encode(torch.zeros(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert enc.num_prefix_tokens == 3 and prefix.shape == (1, 3, 32) and patches.shape == (1, 16, 32)


def test_average_pooled_vit_gets_its_final_norm_per_token():
    # timm moves the final norm into fc_norm for global_pool="avg"; forward_features is then un-normed
    enc = load_image_encoder(TINY_IMAGE_MODEL + "&global_pool=avg&class_token=false", image_size=TINY_IMAGE_SIZE)
    patches, prefix = enc.encode(torch.randn(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert enc.num_prefix_tokens == 0 and prefix.shape == (1, 0, 32) and patches.shape == (1, 16, 32)
    assert float(patches.mean(-1).abs().max()) < 1e-4 and abs(float(patches.std(-1).mean()) - 1) < 0.05


def test_cnn_feature_map_becomes_patches():
    enc = load_image_encoder(TINY_CNN_MODEL, image_size=TINY_IMAGE_SIZE)
    pixels = torch.randn(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    patches, prefix = enc.encode(pixels)
    assert enc.num_prefix_tokens == 0 and prefix.shape == (2, 0, enc.dim)
    with torch.inference_mode():
        fmap = enc.model.forward_features(pixels)
    assert fmap.shape[2:] == enc.grid and patches.shape == (2, enc.grid[0] * enc.grid[1], enc.dim)
    torch.testing.assert_close(patches[:, 5], fmap[:, :, 5 // enc.grid[1], 5 % enc.grid[1]])  # row-major
    assert enc.flops_per_image() > 0


def test_vit_flops_formula_matches_torch_counter(vit):
    m, n, d, h, p = 16, 17, 32, 64, 8
    formula = 2 * m * 3 * p * p * d + 2 * (2 * n * d * 3 * d + 4 * n * n * d + 2 * n * d * d + 4 * n * d * h)
    assert vit.flops_per_image() == formula
    assert counted_flops(vit.model, TINY_IMAGE_SIZE, "cpu") == formula


def test_random_models_are_deterministic_and_fingerprinted(vit):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    again = load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert again.weights_sha256() == vit.weights_sha256()
    fp = vit.fingerprint()
    assert fp["image_size"] == TINY_IMAGE_SIZE and fp["compute_dtype"] == "float32"
    assert set(fp["preprocessing"]) == {"interpolation", "mean", "std", "crop"}
    other = load_image_encoder(TINY_IMAGE_MODEL.replace("depth=2", "depth=1"), image_size=TINY_IMAGE_SIZE)
    assert other.weights_sha256() != vit.weights_sha256()


def test_bfloat16_autocast_returns_float32(vit):
    enc = load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE, compute_dtype="bfloat16")
    pixels = torch.randn(1, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    patches, _ = enc.encode(pixels)
    assert patches.dtype == torch.float32
    torch.testing.assert_close(patches, vit.encode(pixels)[0], atol=0.15, rtol=0)


def test_bad_names_are_config_errors(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="not a timm model name"):
        load_image_encoder("random:no_such_vit")
    with pytest.raises(ConfigError, match="unknown offline name"):
        load_image_encoder("offline:dinov3")
    with pytest.raises(ConfigError, match="key=value"):
        load_image_encoder("random:test_vit?depth")
    with pytest.raises(ConfigError, match=r"'resnet18'.*HF_HUB_OFFLINE"):
        load_image_encoder("resnet18")  # pretrained weights, not cached here


def test_cast_weights_runs_the_model_in_bfloat16(vit):
    enc = load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE, compute_dtype="bfloat16",
                             cast_weights=True)
    assert enc.model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    pixels = torch.randn(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    patches, prefix = enc.encode(pixels)
    assert patches.dtype == prefix.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: tokens of std ~1 agree with float32 to a few hundredths
    torch.testing.assert_close(patches, vit.encode(pixels)[0], atol=0.1, rtol=0)
    fp = enc.fingerprint()
    assert fp["weights_sha256"] == vit.weights_sha256()  # the hash names the weights as loaded (float32)
    assert fp["weights_dtype"] == "bfloat16" and "weights_dtype" not in vit.fingerprint()
    cnn = load_image_encoder(TINY_CNN_MODEL, image_size=TINY_IMAGE_SIZE, compute_dtype="bfloat16", cast_weights=True)
    assert cnn.flops_per_image() == load_image_encoder(TINY_CNN_MODEL, image_size=TINY_IMAGE_SIZE).flops_per_image()
    # float32 has nothing to cast: the fingerprint stays the plain one
    assert "weights_dtype" not in load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE,
                                                     cast_weights=True).fingerprint()


@pytest.mark.bench
def test_compiled_forward_matches_eager(vit):
    # The one test that really compiles (Inductor, a C++ compiler): 5-10 s for the tiny ViT, and what it
    # checks is this machine's toolchain as much as our code, so it runs with `-m bench` only.
    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler on this machine for Inductor (the fallback is tested below)")
    enc = load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE, compile=True, batch_size=2)
    assert enc.compiled, "torch.compile failed although a C++ compiler is installed (see the warning)"
    assert enc.fingerprint()["compiled"] == "inductor-frozen" and "compiled" not in vit.fingerprint()
    pixels = torch.randn(5, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)  # 2 + 2 + a last batch padded from 1
    got, want = enc.encode(pixels), vit.encode(pixels)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w, atol=1e-4, rtol=0)  # fused kernels reorder float32 sums, no more
    assert enc.encode(pixels[:0])[0].shape == (0, 16, 32)


def test_failed_compilation_warns_and_stays_eager(vit, monkeypatch):
    def no_compiler(fn, **kwargs):
        def run(*a):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
        return run

    monkeypatch.setattr(torch, "compile", no_compiler)
    with pytest.warns(RuntimeWarning, match="torch.compile failed.*running it eagerly"):
        enc = load_image_encoder(TINY_IMAGE_MODEL, image_size=TINY_IMAGE_SIZE, compile=True, batch_size=2)
    assert not enc.compiled and enc.fingerprint() == vit.fingerprint()  # the cache says what really ran
    pixels = torch.randn(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    torch.testing.assert_close(enc.encode(pixels)[0], vit.encode(pixels)[0], atol=0, rtol=0)
