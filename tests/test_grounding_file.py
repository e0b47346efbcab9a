"""grounding.json in both forms: format 2 (captions and images) and the older flat form load into one
object; malformed input is one error naming the file, the caption (or image) and the reason."""
import json

import pytest

from pipeline.errors import ConfigError
from pipeline.evaluation.grounding_file import FLAT, SHAPES, as_grounding, load_grounding

PHRASE = {"start": 2, "end": 12, "text": "red circle", "box": [0, 0, 32, 32], "shape": "circle", "colour": "red",
          "words": [{"start": 2, "end": 5, "text": "red", "kind": "colour", "class": "red"},
                    {"start": 6, "end": 12, "text": "circle", "kind": "shape", "class": "circle", "held_out": True}],
          "shape_index": 0}
FORMAT2 = {"format": 2,
           "captions": {"img00000_0": {"image_id": "img00000", "phrases": [PHRASE],
                                       "nonvisual": [{"start": 13, "end": 28, "text": "in this picture"}]}},
           "images": {"img00000": {"size": [64, 64], "shapes": [
               {"index": 0, "box": [0, 0, 32, 32], "shape": "circle", "colour": "red", "size": "small",
                "centre": [16, 16], "area": 800},
               {"index": 1, "box": [32, 32, 64, 64], "shape": "square", "colour": "blue", "size": "small"}]}}}


def test_format_2_loads_phrases_shapes_and_nonvisual_spans(tmp_path):
    path = tmp_path / "grounding.json"
    path.write_text(json.dumps(FORMAT2))
    g = load_grounding(path)
    assert g.format == SHAPES and g.knows_shapes
    assert g["img00000_0"][0]["text"] == "red circle" and g.get("missing") is None and "img00000_0" in g
    shapes = g.shapes("img00000_0")
    assert [s["box"] for s in shapes] == [[0, 0, 32, 32], [32, 32, 64, 64]]
    # A shape without centre or area gets its box's centre and area.
    assert shapes[1]["centre"] == [48.0, 48.0] and shapes[1]["area"] == 1024.0 and shapes[0]["area"] == 800.0
    assert g.nonvisual_spans("img00000_0") == [{"start": 13, "end": 28, "text": "in this picture"}]


def test_the_old_flat_form_still_loads(tmp_path):
    path = tmp_path / "grounding.json"
    path.write_text(json.dumps({"cap0": [{k: v for k, v in PHRASE.items() if k != "shape_index"}], "cap1": []}))
    g = load_grounding(path)
    assert g.format == FLAT and not g.knows_shapes
    assert g["cap0"][0]["box"] == [0, 0, 32, 32] and g.get("cap1") == []
    assert g.shapes("cap0") is None and g.nonvisual_spans("cap0") is None
    assert as_grounding({"cap0": []}).format == FLAT and as_grounding(g) is g and as_grounding(None) is None


def bad(data, tmp_path) -> str:
    path = tmp_path / "grounding.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        load_grounding(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def with_phrase(**change) -> dict:
    data = json.loads(json.dumps(FORMAT2))
    data["captions"]["img00000_0"]["phrases"][0].update(change)
    return data


def test_malformed_input_names_file_caption_and_reason(tmp_path):
    assert "caption cap0" in bad({"cap0": [{"start": 0, "end": 3}]}, tmp_path)          # no box
    assert "x0 < x1" in bad({"cap0": [{"start": 0, "end": 3, "box": [5, 0, 1, 4]}]}, tmp_path)
    assert "start" in bad({"cap0": [{"start": 4, "end": 3, "box": [0, 0, 1, 1]}]}, tmp_path)
    assert "must be a list" in bad({"cap0": {"start": 0}}, tmp_path)
    assert "caption img00000_0: phrase 0: shape_index 7" in bad(with_phrase(shape_index=7), tmp_path)
    assert "word 0" in bad(with_phrase(words=[{"start": 2, "end": 5}]), tmp_path)             # no kind
    data = json.loads(json.dumps(FORMAT2))
    data["captions"]["img00000_0"]["image_id"] = "img00009"
    assert "caption img00000_0: image_id 'img00009'" in bad(data, tmp_path)
    data = json.loads(json.dumps(FORMAT2))
    data["images"]["img00000"]["shapes"][1]["box"] = [0, 0, 1]
    assert "image img00000: shape 1" in bad(data, tmp_path)
    data = json.loads(json.dumps(FORMAT2))
    data["captions"]["img00000_0"]["nonvisual"] = [{"start": 3}]
    assert "nonvisual span 0" in bad(data, tmp_path)
    assert "format 3" in bad({"format": 3, "captions": {}, "images": {}}, tmp_path)
    assert "\"images\"" in bad({"format": 2, "captions": {}}, tmp_path)
    assert "JSON object" in bad([1, 2], tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_grounding(tmp_path / "nothing.json")
