"""load_split on each format, and every bad caption input under both policies."""
import json

import pytest

from pipeline.data import load_split, resolve_image
from pipeline.errors import BadItems, DataError
from pipeline.records import CaptionRecord


def coco(images=((1, "a.jpg"), (2, "b.jpg")), anns=((10, 1, "A red circle."), (11, 2, "A blue square."))):
    return {"info": {}, "images": [{"id": i, "file_name": f, "width": 9, "height": 9} for i, f in images],
            "annotations": [{"id": a, "image_id": i, "caption": c} for a, i, c in anns]}


def karpathy():
    return {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "x.jpg", "imgid": 0, "cocoid": 391895, "split": "test",
         "sentences": [{"raw": "A man on a bike.", "sentid": 770, "tokens": ["a"]},
                       {"raw": "Someone cycling.", "sentid": 771, "tokens": ["b"]}]},
        {"filepath": "train2014", "filename": "y.jpg", "imgid": 1, "cocoid": 5, "split": "restval",
         "sentences": [{"raw": "Two dogs.", "sentid": 772}]},
        {"filename": "z.jpg", "imgid": 2, "split": "train", "sentences": [{"raw": "A cat."}]}]}


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def jsonl(*objs):
    return "\n".join(json.dumps(o) for o in objs) + "\n"


def test_coco(tmp_path):
    path = write(tmp_path, "captions_val2014.json", json.dumps(coco()))
    recs = load_split(path, tmp_path)
    assert recs == [CaptionRecord("10", "A red circle.", "1", "a.jpg", "train"),
                    CaptionRecord("11", "A blue square.", "2", "b.jpg", "train")]
    assert {r.split for r in load_split(path, tmp_path, split="val")} == {"val"}


def test_karpathy_splits_ids_and_paths(tmp_path):
    path = write(tmp_path, "dataset_coco.json", json.dumps(karpathy(), indent=1))
    test = load_split(path, tmp_path, split="test")
    assert [(r.caption_id, r.image_id, r.image_path) for r in test] == [
        ("770", "391895", "val2014/x.jpg"), ("771", "391895", "val2014/x.jpg")]
    assert [r.split for r in load_split(path, tmp_path, split="restval")] == ["restval"]
    (cat,) = load_split(path, tmp_path, split="train")
    assert (cat.caption_id, cat.image_id, cat.image_path, cat.text) == ("2#0", "2", "z.jpg", "A cat.")
    assert len(load_split(path, tmp_path)) == 4


def test_jsonl_defaults_and_filter(tmp_path):
    path = write(tmp_path, "m.jsonl", jsonl(
        {"image": "i/1.png", "caption": "one", "split": "val"},
        {"image": "i/2.png", "caption": "two", "split": "train", "caption_id": 7, "image_id": "im2"},
        {"image": "i/1.png", "caption": "uno"}) + "\n\n")
    recs = load_split(path, tmp_path)
    assert recs == [CaptionRecord("1", "one", "i/1.png", "i/1.png", "val"),
                    CaptionRecord("7", "two", "im2", "i/2.png", "train"),
                    CaptionRecord("3", "uno", "i/1.png", "i/1.png", "train")]
    assert [r.caption_id for r in load_split(path, tmp_path, split="train")] == ["7", "3"]


def test_format_detected_from_content_not_name(tmp_path):
    as_json = write(tmp_path, "manifest.json", jsonl({"image": "a.png", "caption": "x"}, {"image": "b.png", "caption": "y"}))
    assert [r.image_path for r in load_split(as_json, tmp_path)] == ["a.png", "b.png"]
    one_line = write(tmp_path, "one.txt", json.dumps({"image": "a.png", "caption": "x", "split": "val"}))
    assert load_split(one_line, tmp_path)[0].split == "val"
    first_bad = write(tmp_path, "m.json", '{"image": "a.png", "caption": \n' + jsonl({"image": "b.png", "caption": "y"}))
    assert [r.caption_id for r in load_split(first_bad, tmp_path, policy=BadItems("skip"))] == ["2"]
    bom = write(tmp_path, "bom.json", b"\xef\xbb\xbf" + json.dumps(coco()).encode())
    assert len(load_split(bom, tmp_path)) == 2


def test_resolve_image(tmp_path):
    rel = CaptionRecord("1", "t", "i", "sub/a.png")
    assert resolve_image(tmp_path, rel) == tmp_path / "sub" / "a.png"
    absolute = CaptionRecord("1", "t", "i", "/data/a.png")
    assert str(resolve_image(tmp_path, absolute)) == "/data/a.png"


def test_split_with_no_records_lists_the_splits(tmp_path):
    path = write(tmp_path, "d.json", json.dumps(karpathy()))
    with pytest.raises(DataError, match=r"split 'val' has no records; the file has splits: restval, test, train"):
        load_split(path, tmp_path, split="val")


@pytest.mark.parametrize("text", ["", "   \t\n"])
def test_empty_caption_both_policies(tmp_path, text):
    path = write(tmp_path, "c.json", json.dumps(coco(anns=((10, 1, "ok"), (11, 2, text)))))
    with pytest.raises(DataError, match="empty or whitespace-only caption") as info:
        load_split(path, tmp_path)
    assert info.value.file == str(path) and "caption id 11" in info.value.item
    policy = BadItems("skip")
    assert [r.caption_id for r in load_split(path, tmp_path, policy=policy)] == ["10"]
    assert policy.skipped == [{"file": str(path), "item": "annotations[1] (caption id 11)",
                               "reason": "empty or whitespace-only caption"}]


def test_invalid_utf8_in_json_reports_line_and_byte(tmp_path):
    body = json.dumps(coco(), indent=2).replace("A blue square.", "A blue \udcff square.", 1)
    data = body.encode("utf-8", errors="surrogateescape")
    offset = data.index(b"\xff")
    path = write(tmp_path, "u.json", data)
    with pytest.raises(DataError, match=f"invalid UTF-8: byte 0xff at byte offset {offset}") as info:
        load_split(path, tmp_path)
    line = data[:offset].count(b"\n") + 1
    assert info.value.item.startswith(f"line {line}, column ")
    policy = BadItems("skip")
    assert [r.caption_id for r in load_split(path, tmp_path, policy=policy)] == ["10"]
    assert "not valid UTF-8" in policy.skipped[0]["reason"] and "caption id 11" in policy.skipped[0]["item"]


def test_invalid_utf8_in_jsonl_is_one_bad_line(tmp_path):
    data = jsonl({"image": "a.png", "caption": "fine"}).encode() + b'{"image": "b.png", "caption": "caf\xe9"}\n'
    path = write(tmp_path, "u.jsonl", data)
    with pytest.raises(DataError, match="invalid UTF-8: byte 0xe9 at byte 35 of the line") as info:
        load_split(path, tmp_path)
    assert info.value.item == "line 2, column 35"
    assert [r.text for r in load_split(path, tmp_path, policy=BadItems("skip"))] == ["fine"]


def test_malformed_json_line_and_column(tmp_path):
    path = write(tmp_path, "bad.json", '{\n  "images": [],\n  "annotations": [}\n}\n')
    with pytest.raises(DataError, match="malformed JSON") as info:
        load_split(path, tmp_path, policy=BadItems("skip"))  # a whole-file error: skip cannot help
    assert info.value.item == "line 3, column 19"


def test_malformed_jsonl_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", jsonl({"image": "a.png", "caption": "x"}) + '{"image": "b.png", "caption": }\n')
    with pytest.raises(DataError, match="malformed JSON") as info:
        load_split(path, tmp_path)
    assert info.value.item == "line 2, column 31"
    assert len(load_split(path, tmp_path, policy=BadItems("skip"))) == 1


def test_duplicate_caption_ids(tmp_path):
    path = write(tmp_path, "d.json", json.dumps(coco(anns=((10, 1, "a"), (10, 2, "b"), (12, 2, "c")))))
    with pytest.raises(DataError, match=r"duplicate caption id '10' \(first seen at annotations\[0\]"):
        load_split(path, tmp_path)
    policy = BadItems("skip")
    assert [r.text for r in load_split(path, tmp_path, policy=policy)] == ["a", "c"]
    assert len(policy.skipped) == 1


def test_unknown_image_id(tmp_path):
    path = write(tmp_path, "c.json", json.dumps(coco(anns=((10, 1, "a"), (11, 99, "b")))))
    with pytest.raises(DataError, match="unknown image id 99") as info:
        load_split(path, tmp_path)
    assert info.value.item == "annotations[1] (caption id 11)"
    assert len(load_split(path, tmp_path, policy=BadItems("skip"))) == 1


def test_missing_keys(tmp_path):
    obj = coco()
    del obj["annotations"][0]["caption"]
    path = write(tmp_path, "c.json", json.dumps(obj))
    with pytest.raises(DataError, match="missing required key 'caption'"):
        load_split(path, tmp_path)
    k = karpathy()
    del k["images"][2]["split"], k["images"][2]["sentences"]
    kpath = write(tmp_path, "k.json", json.dumps(k))
    with pytest.raises(DataError, match="missing required keys 'split', 'sentences'") as info:
        load_split(kpath, tmp_path)
    assert info.value.item == "images[2]"
    no_list = write(tmp_path, "n.json", json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="needs a list under 'images'"):
        load_split(no_list, tmp_path, policy=BadItems("skip"))
    jpath = write(tmp_path, "j.jsonl", jsonl({"caption": "no image"}, {"image": "a.png", "caption": "ok"}))
    with pytest.raises(DataError, match="missing required key 'image'"):
        load_split(jpath, tmp_path)


def test_everything_bad_is_still_an_error_under_skip(tmp_path):
    path = write(tmp_path, "c.json", json.dumps(coco(anns=((10, 1, " "),))))
    with pytest.raises(DataError, match=r"no usable captions in the file \(1 bad items skipped\)"):
        load_split(path, tmp_path, policy=BadItems("skip"))


def test_whole_file_errors(tmp_path):
    with pytest.raises(DataError, match="captions file not found"):
        load_split(tmp_path / "none.json", tmp_path)
    with pytest.raises(DataError, match="unrecognised captions file"):
        load_split(write(tmp_path, "x.json", "[1, 2]"), tmp_path)
    with pytest.raises(DataError, match="images folder not found"):
        load_split(write(tmp_path, "c.json", json.dumps(coco())), tmp_path / "typo")


def test_image_path_must_not_change_for_one_id(tmp_path):
    path = write(tmp_path, "m.jsonl", jsonl({"image": "a.png", "image_id": "i", "caption": "x"},
                                            {"image": "b.png", "image_id": "i", "caption": "y"}))
    with pytest.raises(DataError, match="image id 'i' already names 'a.png', here 'b.png'"):
        load_split(path, tmp_path)
