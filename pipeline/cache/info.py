"""`cache_info(split_dir)`: what a split's cache holds, as a plain dict (what `cache info` prints)."""
from __future__ import annotations

from pathlib import Path

from pipeline.cache.format import MANIFEST, PLAN, REPORT, missing_shards
from pipeline.io.jsonio import read_json


def find_splits(root: Path) -> list[Path]:
    """A split folder itself, or the split folders under a cache root."""
    root = Path(root)
    if (root / PLAN).exists():
        return [root]
    return sorted(p for p in root.iterdir() if (p / PLAN).exists()) if root.is_dir() else []


def cache_info(split_dir: Path) -> dict:
    split_dir = Path(split_dir)
    plan = read_json(split_dir / PLAN)
    complete = (split_dir / MANIFEST).exists()
    source = read_json(split_dir / MANIFEST) if complete else plan
    fp = plan["fingerprint"]
    info = {"split": split_dir.name, "path": str(split_dir), "complete": complete,
            "format_version": plan["format_version"], "storage_dtype": fp.get("storage_dtype"),
            "compute_dtype": fp.get("compute_dtype"), "shard_size": fp.get("shard_size"),
            "split_ids": fp.get("split", {}), "modalities": {}}
    if "fixture" in fp:   # random features from the scale fixture: say so wherever the cache is described
        info["fixture"] = fp["fixture"]
    missing = missing_shards(split_dir, plan)
    for m, entries in source["shards"].items():
        files = [split_dir / e["file"] for e in entries]
        on_disk = sum(p.stat().st_size for p in files if p.exists())
        enc = fp.get(m, {})
        row = {"shards": len(entries), "shards_done": len(entries) - len(missing[m]), "bytes": on_disk,
               "model": enc.get("model"), "weights_sha256": enc.get("encoder", {}).get("weights_sha256", "")[:16]}
        if m == "text":
            row.update(layer=enc.get("layer"), max_length=enc.get("max_length"))
        else:
            row.update(image_size=enc.get("image_size"))
        if complete:
            row.update(source.get("totals", {}).get(m, {}))
            if entries:
                row["dim"] = entries[0].get("dim")
                if m == "image":
                    row.update(grid=entries[0].get("grid"), prefix_tokens=entries[0].get("prefix"))
                    if entries[0].get("prefix"):  # what stage two takes as p_0
                        row["class_token"] = entries[0].get("class_token", True)
        info["modalities"][m] = row
    if (split_dir / REPORT).exists():
        report = read_json(split_dir / REPORT)
        sk = report.get("skipped", {})
        info["report"] = {"skipped_captions": len(sk.get("captions", [])), "skipped_images": len(sk.get("images", [])),
                          "captions_of_skipped_images": len(sk.get("captions_of_skipped_images", [])),
                          "truncated_captions": report.get("truncated_captions", 0)}
    return info
