"""Test-wide settings: never touch a model hub, keep the two cores for the suite itself."""
import os

# Without this a stray hub look-up takes 26-50 s to fail instead of 3 s (see shared/OFFLINE.md).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
