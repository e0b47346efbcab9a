"""Tiny, randomly initialised encoders for tests: real code paths, cheap batches, fixed weights.

Weights are created under a fixed seed, so two runs (two machines) produce identical models and
therefore identical caches; none of these need a network.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import torch

# The MiniLM tokenizer (bert-base-uncased vocabulary) ships offline; the tiny model borrows it.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
TINY_TEXT_SEED = 0

# ViT: patch 8, 2 blocks, width 32, 2 heads, CLS token. Use with image_size=TINY_IMAGE_SIZE: a 4x4 grid.
TINY_IMAGE_MODEL = "random:vit_tiny_patch16_224?patch_size=8&embed_dim=32&depth=2&num_heads=2&mlp_ratio=2"
# CNN: timm's 370k-parameter test ResNet at output stride 8: a 4x4 feature map of width 96 at 32 px.
TINY_CNN_MODEL = "random:test_resnet?output_stride=8"
TINY_IMAGE_SIZE = 32


def make_tiny_text_model(folder: Path) -> str:
    """Write a 2-layer, 32-wide BertModel (seeded) and the MiniLM tokenizer into `folder`; return its name
    for load_text_encoder (the folder path). Safe to call again on the same folder."""
    from transformers import BertConfig, BertModel

    from pipeline.encoders.offline import resolve_text_name

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(resolve_text_name("offline:minilm"))
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, folder / name)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, type_vocab_size=2)
    with torch.random.fork_rng(devices=[]):  # seeded without disturbing the caller's RNG
        torch.manual_seed(TINY_TEXT_SEED)
        model = BertModel(config)  # with its pooler, so loading reports no missing keys
    model.save_pretrained(folder)
    return str(folder)
