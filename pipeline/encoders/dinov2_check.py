"""Check the converted DINOv2 against the ONNX graph's own backbone output, run by onnxruntime.

The graph's final LayerNorm output (the Add of `backbone.layernorm.bias`, shape (B, 1 + m, 384)) becomes
the graph's output, the saliency decoder is dropped, and the input's height and width are made symbolic
(the graph was exported at 224 px but computes its sizes), so it runs at any size.
Both sides get the same normalised pixels of a photo-like test image; the result is the largest
absolute difference over all tokens.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter


def photo_like(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """A deterministic 'photo': sky gradient, textured ground, sun, blurred objects, sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    sky = (1 - y) * np.array([90, 150, 230]) + y * np.array([200, 220, 245])
    img = np.broadcast_to(sky, (height, width, 3)).copy()
    horizon = int(height * 0.6)
    ground = rng.normal(0, 18, (height - horizon, width, 1)) + np.array([70, 120, 50])
    img[horizon:] = ground
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    draw.ellipse((width * 0.75, height * 0.08, width * 0.87, height * 0.24), fill=(255, 235, 160))
    for _ in range(6):
        x0, y0 = rng.uniform(0, width * 0.85), rng.uniform(height * 0.35, height * 0.85)
        w, h = rng.uniform(30, width * 0.25), rng.uniform(30, height * 0.3)
        color = tuple(int(c) for c in rng.integers(20, 235, 3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)((x0, y0, x0 + w, y0 + h), fill=color)
    canvas = canvas.filter(ImageFilter.GaussianBlur(1.2))
    noisy = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def final_norm_output(graph) -> str:
    for node in graph.node:
        if node.op_type == "Add" and "backbone.layernorm.bias" in node.input:
            return node.output[0]
    raise ValueError("the ONNX graph has no Add of backbone.layernorm.bias")


def backbone_session(onnx_file: Path):
    """An onnxruntime session for the graph cut at the backbone's final norm, any input size."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_file))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"  # exported at 224; the graph computes sizes
    del model.graph.value_info[:]
    # Keep only the nodes the final norm depends on (the saliency decoder is dropped).
    graph, target = model.graph, final_norm_output(model.graph)
    producer = {out: node for node in graph.node for out in node.output}
    needed, stack, keep = set(), [target], set()
    while stack:
        name = stack.pop()
        if name in needed or name not in producer:
            continue
        needed.add(name)
        node = producer[name]
        keep.add(id(node))
        stack.extend(i for i in node.input if i)
    nodes = [n for n in graph.node if id(n) in keep]
    used = {i for n in nodes for i in n.input}
    del graph.node[:]
    graph.node.extend(nodes)
    inits = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(target, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def onnx_tokens(session, pixels: torch.Tensor) -> np.ndarray:
    (out,) = session.run(None, {session.get_inputs()[0].name: pixels.numpy().astype(np.float32)})
    return out


def max_abs_diff(session, model: torch.nn.Module, pixels: torch.Tensor) -> float:
    with torch.inference_mode():
        ours = model.forward_features(pixels).numpy()
    return float(np.abs(ours - onnx_tokens(session, pixels)).max())


def compare(weights: Path | None = None, sizes=(518, 224), image: Image.Image | None = None) -> dict[int, dict]:
    """{size: {max_abs_diff, mean_abs_diff, tokens}} of the converted model vs the ONNX graph, same pixels."""
    from pipeline.encoders.dinov2_onnx import load_timm_dinov2
    from pipeline.encoders.image import ImageEncoder
    from pipeline.encoders.offline import dinov2_weights, onnx_path

    weights = dinov2_weights(weights)
    session = backbone_session(onnx_path())
    image = image if image is not None else photo_like()
    out = {}
    for size in sizes:
        model, extra = load_timm_dinov2(size, weights)
        model.eval().requires_grad_(False)
        enc = ImageEncoder("offline:dinov2-vits14", model, image_size=size, device=torch.device("cpu"),
                           compute_dtype="float32", extra_fingerprint=extra)
        pixels = enc.preprocess(image)[None]
        with torch.inference_mode():
            ours = model.forward_features(pixels).numpy()
        diff = np.abs(ours - onnx_tokens(session, pixels))
        out[size] = {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
                     "tokens": int(ours.shape[1])}
    return out
