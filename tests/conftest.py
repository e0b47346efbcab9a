"""Test-wide settings (never touch a model hub, keep the two cores for the suite itself) and shared fixtures."""
import os

import pytest

# Without this a stray hub look-up takes 26-50 s to fail instead of 3 s (docs/encoders.md, "Working offline").
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
# One thread per process, here and in every subprocess (DVC stages, torchrun ranks, fresh interpreters), set
# before anything imports torch: on tensors this small a second thread gains nothing, and on a machine whose
# cores are busy every op waits at a barrier until that thread is scheduled (docs/development.md).
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    """The tests marked slow first, so that on several workers (pytest-xdist) the longest one overlaps the rest
    of the suite instead of running alone at its end; the order is otherwise the collection's."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny BERT's folder, the text model of the extraction tests (written once per session)."""
    from extract_helpers import tiny_text_folder

    return tiny_text_folder(tmp_path_factory)
