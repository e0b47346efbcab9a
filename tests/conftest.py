"""Test-wide settings (never touch a model hub, keep the two cores for the suite itself) and shared fixtures."""
import os

import pytest

# Without this a stray hub look-up takes 26-50 s to fail instead of 3 s (docs/encoders.md, "Working offline").
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny BERT's folder, the text model of the extraction tests (written once per session)."""
    from extract_helpers import tiny_text_folder

    return tiny_text_folder(tmp_path_factory)
