"""The Karpathy split JSON (COCO, Flickr8k/30k): `images[].filename/filepath/split/sentences[].raw`,
with `sentid`, `imgid`, `cocoid` where the dataset has them. `restval` stays its own split name."""
from __future__ import annotations

from pipeline.data.validate import Collector, as_id, missing_keys
from pipeline.errors import DataError


def parse_karpathy(obj: dict, c: Collector) -> None:
    if not isinstance(obj.get("images"), list):
        raise DataError("Karpathy split file needs a list under 'images'", c.file)
    for k, im in enumerate(obj["images"]):
        item = f"images[{k}]"
        reason = missing_keys(im, ("filename", "split", "sentences"))
        if reason:
            c.bad(reason, item)
            continue
        if not isinstance(im["sentences"], list):
            c.bad("'sentences' must be a list", item)
            continue
        filepath, filename = im.get("filepath") or "", im["filename"]
        # COCO's Karpathy file puts the folder (train2014/val2014) in filepath; Flickr's has none.
        path = f"{filepath}/{filename}" if filepath and isinstance(filename, str) else filename
        # cocoid ties the image back to the COCO annotations; imgid is only an index in this file.
        image_id = im.get("cocoid", im.get("imgid", path))
        for j, sentence in enumerate(im["sentences"]):
            sitem = f"{item}.sentences[{j}]"
            reason = missing_keys(sentence, ("raw",))
            if reason:
                c.bad(reason, sitem)
                continue
            cid = sentence["sentid"] if "sentid" in sentence else f"{as_id(image_id)}#{j}"
            c.add(f"{sitem} (caption id {cid})", cid, sentence["raw"], image_id, path, im["split"])
