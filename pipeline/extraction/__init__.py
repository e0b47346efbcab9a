"""Stage one's engine: frozen encoders -> sharded HDF5 cache, resumable and split across torchrun ranks.

    plan.py          shard plan, fingerprint, TextItem/ImageItem, caption adapter
    directory.py     folder lock, stray temporaries, plan check, --overwrite
    text_runner.py   pre-tokenised items -> caption shards (length-bucketed batches)
    image_runner.py  unique images -> image shards (DataLoader workers decode)
    distributed.py   torchrun ranks, barrier, gather
    finalize.py      manifest.json + report.json
    runner.py        one job end to end; build_text_cache for GLUE/SQuAD items
    verify.py, info.py   checking and describing a finished cache
"""
from pipeline.extraction.info import cache_info, find_splits
from pipeline.extraction.plan import ImageItem, TextItem, caption_items, image_items
from pipeline.extraction.runner import ImageJob, Outcome, TextJob, build_text_cache, run, up_to_date
from pipeline.extraction.text_runner import extract_text
from pipeline.extraction.image_runner import extract_images
from pipeline.extraction.verify import verify_cache

__all__ = ["ImageItem", "ImageJob", "Outcome", "TextItem", "TextJob", "build_text_cache", "cache_info",
           "caption_items", "extract_images", "extract_text", "find_splits", "image_items", "run",
           "up_to_date", "verify_cache"]
