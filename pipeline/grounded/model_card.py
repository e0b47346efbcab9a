"""The model card (README.md) of an exported folder: what it is, how to load it, where it came from, and
the run's metrics when `groundedbert evaluate grounding` wrote them."""
from __future__ import annotations

from pipeline.io.jsonio import at

# (label, dotted key in metrics.json); rows whose key is absent are left out.
HEADLINE = [
    ("pointing game, per word token (transport plan)", "pointing.plan.token.accuracy", "pointing.plan.token.chance"),
    ("pointing game, per phrase (transport plan)", "pointing.plan.phrase.accuracy", "pointing.plan.phrase.chance"),
    ("pointing game, per word token (argmax cos(g, v))", "pointing.similarity.token.accuracy",
     "pointing.similarity.token.chance"),
    ("text -> image R@1", "retrieval.t2i.R@1", "retrieval.t2i.chance@1"),
    ("image -> text R@1", "retrieval.i2t.R@1", "retrieval.i2t.chance@1"),
    ("matching accuracy", "matching.accuracy", None),
    ("matching ROC-AUC", "matching.roc_auc", None),
    ("synonym precision@1 of g", "synonyms.g.precision_at_1", None),
    ("synonym precision@1 of h (the text encoder)", "synonyms.h.precision_at_1", None),
    ("synonym precision@1 of an untrained f (control)", "synonyms.random_fg.precision_at_1", None),
    ("collapse: mean pairwise cosine of g", "collapse.mean_pairwise_cosine_g", None),
]


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def metrics_table(metrics: dict) -> list[str]:
    rows = [(label, at(metrics, key), at(metrics, chance) if chance else None) for label, key, chance in HEADLINE]
    rows = [r for r in rows if r[1] is not None]
    if not rows:
        return ["metrics.json holds none of the usual metrics; see run_metrics.json."]
    split = metrics.get("split", "?")
    lines = [f"On the run's `{split}` split ({metrics.get('captions', '?')} captions, {metrics.get('images', '?')} "
             "images), from `groundedbert evaluate grounding`; all of it is in `run_metrics.json`.", "",
             "| metric | value | chance |", "|---|---|---|"]
    lines += [f"| {label} | {_fmt(v)} | {_fmt(c) if c is not None else ''} |" for label, v, c in rows]
    return lines


def model_card(fields: dict, metrics: dict | None) -> str:
    """`fields`: the GroundedConfig fields the export writes (text_model_name, layer, d_t, ...)."""
    run, source = fields["run_config"], fields["source"]
    train = run.get("train", {})
    lines = [
        "---", "library_name: transformers", "tags: [groundedbert, visual-grounding, feature-extraction]", "---", "",
        f"# GroundedBERT encoder: {fields['text_model_name']} + f_g",
        "",
        "A text encoder expanded with a visual grounding embedding: for every token, `t_i = [h_i ; g_i]` with "
        f"`h_i` the text encoder's hidden state at layer {fields['layer']} and `g_i = f_g(h_i)`, an MLP trained "
        "on image-caption pairs (matching loss, partial optimal transport between tokens and image patches, "
        "token-wise contrastive term). No image is needed at inference.",
        "",
        "## Use",
        "",
        "```python",
        "from pipeline.grounded import GroundedEncoder",
        "",
        "enc = GroundedEncoder.from_pretrained(\"<this folder>\", device=\"cpu\")",
        "out = enc.encode([\"a small red circle left of a blue square\"])",
        "out.t, out.h, out.g, out.attention_mask, out.offsets, out.pooled",
        "```",
        "",
        "Loads from local files only (no network, no `trust_remote_code`). After `import pipeline.grounded`, "
        "`AutoModel.from_pretrained(folder)` is a transformers model: `model(**tokenizer(texts, return_tensors=\"pt\", "
        "padding=True))` returns `last_hidden_state` = [h; g], `h`, `g` and `pooler_output`, and "
        "`pipeline(\"feature-extraction\", model=folder)` works too.",
        "",
        "## What it computes",
        "",
        "| | |", "|---|---|",
        f"| text encoder | `{fields['text_model_name']}`, hidden_states[{fields['layer']}], "
        f"width d_t = {fields['d_t']} |",
        f"| f_g | Linear {fields['d_t']}->{fields['fg_hidden']}, GELU, Linear ->{fields['d_g']}"
        f"{', LayerNorm' if fields['fg_layernorm'] else ''} |",
        f"| token vector t | {fields['d_t'] + fields['d_g']} wide: [h; g] |",
        f"| sentence vector | {fields['pooling']} pooling of t over the input's tokens (specials included) |",
        f"| max_length | {fields['max_length']} tokens (longer inputs are truncated, the last token stays [SEP]) |",
        f"| compute dtype | {fields['compute_dtype']} (as the run's cache was extracted) |",
        "",
        "## Where it came from",
        "",
        f"Run `{source['run']}`, checkpoint `{source['checkpoint']}` (epoch {source['epoch']}, step {source['step']}); "
        f"trained with lambda_ot={train.get('lambda_ot')}, mass={train.get('mass')}, "
        f"local_contrastive_weight={train.get('local_contrastive_weight')}, d_g={train.get('d_g')}. "
        f"Image encoder during training: `{run.get('extract', {}).get('image_model')}`. The resolved configuration "
        "is `run_config` in config.json, the identity of the feature cache it trained on `cache_fingerprint`.",
        "",
        "## Metrics",
        "",
        *(metrics_table(metrics) if metrics else ["The run had no metrics.json when it was exported."]),
        "",
    ]
    return "\n".join(lines)
