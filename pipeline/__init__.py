"""GroundedBERT as a two-stage feature-caching pipeline.

Stage one (frozen encoders -> HDF5 cache) lives in `encoders/`, `data/`, `cache/`, `extraction/`.
Stage two (small MLPs trained from the cache) lives in `modules.py`, `losses.py`, `transport/`, `training/`;
the measurements in `evaluation/`, the trained encoder for users in `grounded/`, text-only tasks in `downstream/`.
Small I/O helpers (atomic writes, JSON, hashes, disk space, folder locks) live in `io/`.
"""
