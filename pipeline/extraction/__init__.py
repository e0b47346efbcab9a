"""Stage one's engine: frozen encoders -> sharded HDF5 cache, resumable and split across torchrun ranks.

    plan.py          shard plan, TextItem/ImageItem, caption adapter (the fingerprint: pipeline/cache/)
    directory.py     folder lock, stray temporaries, plan check, --overwrite
    text_runner.py   pre-tokenised items -> caption shards (length-bucketed batches)
    image_runner.py  unique images -> image shards (DataLoader workers decode)
    distributed.py   torchrun ranks, barrier, gather
    finalize.py      manifest.json + report.json
    runner.py        one job end to end; build_text_cache for GLUE/SQuAD items
"""
from pipeline.extraction.plan import ImageItem, TextItem, caption_items, image_items
from pipeline.extraction.runner import ImageJob, Outcome, TextJob, build_text_cache, run, up_to_date
from pipeline.extraction.text_runner import extract_text
from pipeline.extraction.image_runner import extract_images

__all__ = ["ImageItem", "ImageJob", "Outcome", "TextItem", "TextJob", "build_text_cache", "caption_items",
           "extract_images", "extract_text", "image_items", "run", "up_to_date"]
