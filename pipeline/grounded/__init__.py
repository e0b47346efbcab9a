"""The grounded encoder for users: load a trained run or an exported folder, encode text.

    encoder.py      GroundedEncoder (from_run, from_pretrained, encode) and what encode returns
    vectors.py      text -> tokens -> [h; f_g(h)] -> a sentence vector: the pieces the downstream probe shares
    hf_model.py     GroundedConfig / GroundedModel: the export as transformers models are saved and loaded
    folder.py       an export folder read and checked (bad folders are one ExportError line)
    export.py       a run -> an export folder (`groundedbert export`), checked to reproduce the run
    model_card.py   the folder's README.md

See docs/encoder_api.md.
"""
from pipeline.grounded.encoder import Encoded, GroundedEncoder
from pipeline.grounded.hf_model import GroundedConfig, GroundedModel

__all__ = ["Encoded", "GroundedConfig", "GroundedEncoder", "GroundedModel"]
