"""GroundedBERT as a two-stage feature-caching pipeline.

Stage one (frozen encoders -> HDF5 cache) lives in `encoders/`, `data/`, `cache_format.py`, `extraction/`.
Stage two (small MLPs trained from the cache) lives in `modules.py`, `losses.py`, `transport.py`, `training/`.
"""
