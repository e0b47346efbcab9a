"""Stage one: run the frozen encoders once over a split and cache their features (`groundedbert extract`).

    groundedbert extract --captions data/synth/captions.jsonl --images data/synth/images \
        --cache cache/default --split train

Defaults come from params.yaml `extract:` (then --config, then --set, then the options below).
Under torchrun every rank runs this same command and takes its share of the shards:

    torchrun --nproc_per_node=8 -m stages.extract --captions ... --images ... --cache ... --split train
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from pipeline.cache.fingerprint import cheap_part, from_config
from pipeline.config import resolve, validate_section
from pipeline.errors import BadItems, ConfigError
from pipeline.extraction import distributed
from pipeline.extraction.plan import parse_shards, split_digest
from stages._common import ConfigOpt, SetOpt, friendly_errors

MODALITIES = {"both": ["text", "image"], "text": ["text"], "image": ["image"]}


def _opt(help: str):
    return typer.Option(help=help + " (default from params.yaml extract:)", show_default=False)


@friendly_errors
def extract(
    captions: Annotated[Path, typer.Option(help="Captions file: COCO captions JSON, Karpathy JSON or JSONL manifest.")],
    images: Annotated[Path, typer.Option(help="Folder the image paths in the captions file are relative to.")],
    cache: Annotated[Path, typer.Option(help="Cache root; the split lands in CACHE/<split>/.")],
    split: Annotated[Optional[str], typer.Option(help="Split to extract (train, val, test...); every record when omitted, into CACHE/all/.")] = None,
    on_error: Annotated[Optional[str], _opt("fail: stop at the first bad item; skip: leave it out and list it in report.json.")] = None,
    shards: Annotated[Optional[str], typer.Option(help="Compute only these shard indices, e.g. 0,3,5-7 (both modalities).")] = None,
    modality: Annotated[str, typer.Option(help="text, image or both.")] = "both",
    text_model: Annotated[Optional[str], _opt("Text encoder: hub id, local folder or offline:minilm.")] = None,
    image_model: Annotated[Optional[str], _opt("Image encoder: timm name or offline:dinov2-vits14.")] = None,
    layer: Annotated[Optional[int], _opt("Hidden-state layer of the text encoder (-1 = last).")] = None,
    max_length: Annotated[Optional[int], _opt("Tokenizer max length; longer captions are truncated and counted.")] = None,
    image_size: Annotated[Optional[int], _opt("Image encoder input size in pixels.")] = None,
    compute_dtype: Annotated[Optional[str], _opt("float32, bfloat16 or float16.")] = None,
    image_cast_weights: Annotated[Optional[bool], _opt("bfloat16/float16: cast the image encoder's weights instead of autocasting.")] = None,
    image_compile: Annotated[Optional[bool], _opt("torch.compile the image encoder (falls back to eager with a warning).")] = None,
    storage_dtype: Annotated[Optional[str], _opt("dtype of the cached arrays.")] = None,
    text_batch_size: Annotated[Optional[int], _opt("Captions per batch (after sorting by length).")] = None,
    image_batch_size: Annotated[Optional[int], _opt("Images per batch.")] = None,
    num_workers: Annotated[Optional[str], _opt("Image decoding: auto, 0 (this process, on a thread pool, between batches) or N worker processes beside the encoder.")] = None,
    shard_size: Annotated[Optional[int], _opt("Items per HDF5 shard.")] = None,
    device: Annotated[Optional[str], _opt("auto, cpu or cuda.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Delete a cache made with another configuration (only files extraction wrote).")] = False,
    wait: Annotated[bool, typer.Option(help="Another extraction holds the split folder: wait for it, then do what it left undone (default: stop and name it).")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print records, shards, estimated bytes, free space and time; write nothing.")] = False,
    config: ConfigOpt = None,
    set: SetOpt = None,
) -> None:
    from pipeline.data import load_split

    cfg = resolve(config, set or [])["extract"]
    given = dict(on_error=on_error, text_model=text_model, image_model=image_model, text_layer=layer,
                 max_length=max_length, image_size=image_size, compute_dtype=compute_dtype,
                 image_cast_weights=image_cast_weights, image_compile=image_compile,
                 storage_dtype=storage_dtype, text_batch_size=text_batch_size, image_batch_size=image_batch_size,
                 num_workers=num_workers, shard_size=shard_size, device=device)
    cfg.update({k: v for k, v in given.items() if v is not None})
    cfg["num_workers"] = parse_workers(cfg["num_workers"])  # a bad value fails before any model loads
    cfg = validate_section("extract", cfg, "from the command line")
    if modality not in MODALITIES:
        raise ConfigError(f"--modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    mods = MODALITIES[modality]
    subset = parse_shards(shards)
    split_dir = Path(cache) / (split or "all")
    world = distributed.init(cfg["device"])
    say = typer.echo if world.leader else (lambda *a, **k: None)

    t0 = time.perf_counter()
    policy = BadItems(cfg["on_error"])
    records = load_split(captions, images, split, policy)
    fp = from_config(cfg, mods, split_digest(records))
    if dry_run:
        from pipeline.extraction.sizing import dry_run_lines
        for line in dry_run_lines(cfg, mods, records, split_dir):
            say(line)
        distributed.shutdown()
        return
    if world.leader:  # another job in the folder: stop now, before any model loads (or, with --wait, wait)
        from pipeline.extraction.directory import lock_split
        lock_split(split_dir, wait).release()
    distributed.barrier()
    from pipeline.extraction.runner import up_to_date
    if up_to_date(split_dir, cheap_part(fp), overwrite):
        say(f"{split_dir}: up to date ({len(records)} captions), nothing to do [{time.perf_counter() - t0:.1f}s]")
        distributed.shutdown()
        return

    bad_captions = len(policy.skipped)  # the image pass adds its own to the same policy
    outcome = _run(cfg, mods, records, images, split_dir, fp, subset, overwrite, world, policy, progress, wait)
    took = time.perf_counter() - t0
    if outcome.complete:
        totals = outcome.manifest["totals"] if outcome.manifest else {}
        parts = ", ".join(f"{m}: {t['items']} items in {t['shards']} shards" for m, t in totals.items())
        say(f"{split_dir}: complete ({parts}) [{took:.1f}s]")
        bad_images = totals.get("image", {}).get("skipped", 0)
        if bad_captions or bad_images:
            say(f"{bad_captions} bad captions and {bad_images} bad images skipped: see {split_dir / 'report.json'}")
    else:
        left = ", ".join(f"{m} {v}" for m, v in outcome.missing.items() if v)
        say(f"{split_dir}: partial, shards still missing: {left} [{took:.1f}s]; run again without --shards to finish")
        if outcome.deferred_text:
            say(f"caption shards {outcome.deferred_text} wait for the image shards holding their images")
    distributed.shutdown()


def parse_workers(value) -> int | str:
    """extract.num_workers checked: 'auto' or a count >= 0 (from YAML, --set or the command line)."""
    if value == "auto":
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise ConfigError(f"extract.num_workers must be 'auto' or an integer >= 0, got {value!r}")


def decode_workers(value, device) -> int:
    """extract.num_workers as a count. 'auto': 0 beside a CPU encoder, which already keeps every core busy
    (worker processes only preempt its threads: bench/RESULTS.md), and up to 8 worker processes for a GPU, whose
    encoder would otherwise wait for decoding."""
    value = parse_workers(value)
    if value == "auto":
        return 0 if device.type == "cpu" else min(8, os.cpu_count() or 1)
    return value


def _run(cfg, mods, records, images, split_dir, fp, subset, overwrite, world, policy, progress, wait=False):
    from pipeline.encoders import load_image_encoder, load_text_encoder
    from pipeline.extraction.plan import caption_items, image_items
    from pipeline.extraction.runner import ImageJob, TextJob, run

    device = distributed.device_for(world, cfg["device"])
    text_job = image_job = None
    if "text" in mods:
        if not (progress and world.leader):  # transformers' own weight-loading bar, once per rank otherwise
            from transformers.utils import logging as hf_logging
            hf_logging.disable_progress_bar()
        enc = load_text_encoder(cfg["text_model"], layer=cfg["text_layer"], max_length=cfg["max_length"],
                                device=device, compute_dtype=cfg["compute_dtype"])
        fp["text"]["encoder"] = enc.fingerprint()
        text_job = TextJob(caption_items(records, enc), enc, cfg["text_batch_size"])
    if "image" in mods:
        enc = load_image_encoder(cfg["image_model"], image_size=cfg["image_size"], device=device,
                                 compute_dtype=cfg["compute_dtype"], cast_weights=cfg["image_cast_weights"],
                                 compile=cfg["image_compile"], batch_size=cfg["image_batch_size"])
        fp["image"]["encoder"] = enc.fingerprint()
        image_job = ImageJob(image_items(records), enc, Path(images), cfg["image_batch_size"],
                             decode_workers(cfg["num_workers"], enc.device), policy)
    if world.leader:  # refuse before the first shard when the disk cannot hold the cache
        from pipeline.extraction.sizing import check_free_space, estimate_for_items
        check_free_space(split_dir, estimate_for_items(
            len(records), text_job.items if text_job else None, text_job.encoder.dim if text_job else None,
            image_job.items if image_job else None, image_job.encoder if image_job else None,
            cfg["shard_size"], cfg["storage_dtype"]))
    return run(split_dir, fp, text=text_job, image=image_job, shard_size=cfg["shard_size"],
               storage_dtype=cfg["storage_dtype"], shards=subset, overwrite=overwrite, world=world,
               progress=progress, skipped_captions=list(policy.skipped), wait=wait,
               extra_report={"config": cfg, "device": str(device), "world_size": world.size})


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command(help="Stage one: run the frozen encoders once and cache their features.")(extract)

if __name__ == "__main__":
    from stages._common import run_module

    run_module(app)
