"""Finishing a split: manifest.json (the plan + each shard's sha256 and counts) and report.json.

The manifest is deterministic (same inputs, same bytes) and written last: its presence is what
makes a cache complete. report.json holds what a user must see (skipped items, truncated captions)
and is deterministic too; what varies between runs (timings, device, world size, the resolved
configuration of the command) goes to run.json, which `.dvcignore` keeps out of the output's hash
so that re-extracting identical bytes is not a change for DVC.
"""
from __future__ import annotations

import copy
from pathlib import Path

from pipeline.cache.format import MANIFEST, REPORT, RUN_LOG, missing_shards, shard_counts, shard_records
from pipeline.extraction import distributed
from pipeline.extraction.distributed import World
from pipeline.io.atomic import write_json_atomic
from pipeline.io.hashing import file_sha256


def describe_shard(split_dir: Path, modality: str, entry: dict) -> dict:
    """Checksum and counts of one shard on disk."""
    path = Path(split_dir) / entry["file"]
    return {"sha256": file_sha256(path), **shard_counts(path, modality)}


def describe_all(split_dir: Path, plan: dict, world: World) -> dict:
    """Each rank hashes the shards it owns (reading a large cache once, spread over the ranks)."""
    flat = [(m, i) for m in sorted(plan["shards"]) for i in range(len(plan["shards"][m]))]
    mine = {f"{m}/{i}": describe_shard(split_dir, m, plan["shards"][m][i])
            for k, (m, i) in enumerate(flat) if k % world.size == world.rank}
    merged = {}
    for part in distributed.gather(mine):
        merged.update(part)
    return merged


def build_manifest(plan: dict, described: dict) -> dict:
    manifest = copy.deepcopy(plan)
    totals = {}
    for m, entries in manifest["shards"].items():
        for i, entry in enumerate(entries):
            entry.update(described[f"{m}/{i}"])
        totals[m] = {"shards": len(entries), "items": sum(e["count"] for e in entries)}
        if m == "text":
            totals[m]["tokens"] = sum(e["tokens"] for e in entries)
            totals[m]["truncated"] = sum(e["truncated"] for e in entries)
        else:
            totals[m]["skipped"] = sum(e["skipped"] for e in entries)
    manifest["totals"] = totals
    return manifest


def skipped_images(split_dir: Path, plan: dict, attr: str = "skipped") -> list[dict]:
    """The records the image shards keep in `attr`: "skipped" (left out) or "warnings" (encoded, with a problem)."""
    out = []
    for entry in plan["shards"].get("image", []):
        path = Path(split_dir) / entry["file"]
        if path.exists():
            out += shard_records(path, attr)
    return out


def finalize(split_dir: Path, plan: dict, world: World, *, timings: dict, skipped_captions: list[dict],
             dropped: list[str], extra: dict | None = None) -> dict | None:
    """All ranks call this after the last barrier. Returns the manifest (rank 0) once every shard exists."""
    if any(missing_shards(split_dir, plan).values()):
        return None
    described = describe_all(split_dir, plan, world)
    if not world.leader:
        return None
    manifest = build_manifest(plan, described)
    report = {"skipped": {"captions": skipped_captions, "images": skipped_images(split_dir, plan),
                          "captions_of_skipped_images": sorted(dropped)},
              "warnings": {"images": skipped_images(split_dir, plan, "warnings")},
              "truncated_captions": manifest["totals"].get("text", {}).get("truncated", 0)}
    write_json_atomic(Path(split_dir) / REPORT, report)
    write_json_atomic(Path(split_dir) / RUN_LOG, {"timing": timings, **(extra or {})})
    write_json_atomic(Path(split_dir) / MANIFEST, manifest)  # last: its presence marks the cache complete
    return manifest
