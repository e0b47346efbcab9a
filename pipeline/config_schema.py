"""What every configuration key may hold: its type, its choices or its range, next to its name.

params.yaml holds the defaults and says what each knob does; this file says what a value must look like.
Every layer (the defaults, an experiment file, --set) is checked against it before any data loads, so
`--set train.layernorm=abc` or `train.epochs: 2.5` is a one-line error naming the key, not a surprise
deep inside training. Strict types: a bool is not a number and a float is not an integer (an integer
is a valid float). No defaults here: a key params.yaml lacks is an error (tests/test_config_schema.py).
"""
from __future__ import annotations

import re
from typing import Annotated, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

def _device(name: str) -> str:
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name):
        raise ValueError("should be auto, cpu, mps, cuda or cuda:N")
    return name


Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]
Weight = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(gt=0, le=1)]            # a share of the mass: (0, 1]
Text = Annotated[str, StringConstraints(min_length=1)]    # a path, a model name: given verbatim by --set
Device = Annotated[str, AfterValidator(_device)]
ComputeDtype = Literal["float32", "bfloat16", "float16"]
StorageDtype = Literal["float16", "float32"]              # what HDF5 and numpy both store natively
OnError = Literal["fail", "skip"]


class Section(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Data(Section):
    root: Text
    preset: Literal["scenes", "simple"]
    images: Count
    captions_per_image: Count
    image_size: Annotated[int, Field(ge=32)]             # the synthetic shapes need room
    val_fraction: Annotated[float, Field(ge=0, lt=1)]
    test_fraction: Annotated[float, Field(ge=0, lt=1)]
    seed: NonNegative
    # [min, max], inclusive. Six kinds, each at most once an image (pipeline/data/synth_scene.py, MAX_SHAPES);
    # a caption names one shape or two (pipeline/data/synth_scenes_preset.py, NAMED_MAX).
    shapes: Annotated[list[Annotated[int, Field(ge=1, le=6)]], Field(min_length=2, max_length=2)]
    named: Annotated[list[Annotated[int, Field(ge=1, le=2)]], Field(min_length=2, max_length=2)]
    nonvisual_fraction: Annotated[float, Field(ge=0, le=1)]
    held_out_synonyms: bool

    @model_validator(mode="after")
    def _some_left_to_train(self):
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:g} "
                             "leaves no images for training")
        return self

    @model_validator(mode="after")
    def _ranges_in_order(self):
        for key in ("shapes", "named"):
            low, high = getattr(self, key)
            if low > high:
                raise ValueError(f"{key} = [{low}, {high}] is not a range: [min, max] with min <= max")
        if self.named[1] > self.shapes[0]:
            raise ValueError(f"named = {self.named} asks captions to name more shapes than shapes = {self.shapes} "
                             "puts in some images: named's max must be at most shapes' min")
        return self


class Extract(Section):
    text_model: Text
    image_model: Text
    text_layer: int                                       # negative counts from the last layer
    max_length: Annotated[int, Field(ge=2)]               # [CLS] and [SEP] at least
    image_size: Count
    compute_dtype: ComputeDtype
    image_cast_weights: bool
    image_compile: bool
    storage_dtype: StorageDtype
    text_batch_size: Count
    image_batch_size: Count
    num_workers: Union[Literal["auto"], NonNegative]
    shard_size: Count
    on_error: OnError
    device: Device


class Train(Section):
    d_g: Count
    hidden: Count
    layernorm: bool
    lambda_ot: Weight
    mass: Fraction
    epsilon: Positive
    patch_capacity: Positive
    # The names of pipeline.transport.SOLVERS (tests/test_config_schema.py keeps the two lists equal).
    ot_solver: Literal["sinkhorn", "sinkhorn-compiled", "pot-exact", "pot-entropic"]
    ot_max_iter: Count
    ot_tol: Positive
    ot_hinge_weight: Weight
    ot_hinge_margin: Annotated[float, Field(ge=0, le=2)]   # costs are 1 - cos, in [0, 2]
    local_contrastive_weight: Weight
    local_contrastive_temperature: Positive
    local_score: Literal["maxsim", "partial_ot"]          # pipeline.local_score.LOCAL_SCORES
    local_negatives: Optional[Count]                      # partial_ot: null = every image of the batch
    negatives: Count
    negative_mode: Literal["random", "hard"]
    train_images: Optional[Count]                         # null = the whole training split
    batch_size: Annotated[int, Field(ge=2)]               # a batch of one image has no negatives
    epochs: Count
    lr: Weight                                            # 0 leaves the model as initialised (a baseline)
    weight_decay: Weight
    warmup_steps: NonNegative
    grad_clip: Positive                                   # a max norm of 0 would zero every gradient
    patience: Count
    memory_budget_gb: Weight
    num_workers: NonNegative
    num_threads: NonNegative                              # 0 = torch's default
    ot_num_threads: NonNegative                           # the OT solve's threads; 0 = num_threads
    val_pointing_every: Count                             # epochs between validation pointing passes
    seed: NonNegative
    device: Device
    amp: Literal["auto", "bfloat16", "off"]


class CommonOT(Section):
    mass: Fraction
    epsilon: Positive
    patch_capacity: Positive


class Evaluate(Section):
    block_size: Count
    seed: NonNegative
    figures: NonNegative
    mass: Optional[Fraction]                              # null = the run's own train.* value
    epsilon: Optional[Positive]
    patch_capacity: Optional[Positive]
    common: CommonOT


class Downstream(Section):
    seeds: Count
    seed: NonNegative
    pooling: Literal["cls", "mean"]
    control: bool
    tune_fg: bool
    dropout: Annotated[float, Field(ge=0, lt=1)]
    weight_decay: Weight
    warmup_fraction: Annotated[float, Field(ge=0, le=1)]
    probe_head_hidden: NonNegative                        # 0 = a linear head
    probe_epochs: Count
    probe_lr: Positive
    fg_lr: Positive
    probe_batch_size: Count
    finetune_epochs: Count
    finetune_head_hidden: NonNegative
    finetune_lr: Positive
    head_lr: Positive
    finetune_batch_size: Count
    num_threads: NonNegative
    compute_dtype: ComputeDtype
    max_length: Annotated[int, Field(ge=3)]               # [CLS] A [SEP] B [SEP] needs room for a token
    squad_max_length: Annotated[int, Field(ge=3)]
    stride: NonNegative
    n_best: Count
    max_answer_length: Count
    null_threshold: float
    cache: Text
    memory_budget_gb: Positive                            # a task split larger than this streams
    shard_size: Count
    extract_batch_size: Count
    storage_dtype: StorageDtype
    on_error: OnError
    device: Device

    @model_validator(mode="after")
    def _windows_advance(self):
        if self.stride >= self.squad_max_length:
            raise ValueError(f"stride ({self.stride}) must be smaller than squad_max_length "
                             f"({self.squad_max_length}): the windows would not advance")
        return self


class Config(Section):
    data: Data
    extract: Extract
    train: Train
    evaluate: Evaluate
    downstream: Downstream


def text_keys(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    """Dotted names of the free-text keys (paths, model names): --set takes their value verbatim, so
    `--set data.root=2024` is the folder "2024", not the number."""
    out = set()
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out |= text_keys(field.annotation, f"{prefix}{name}.")
        elif field.annotation is str:
            out.add(prefix + name)
    return out


def schema_keys(model: type[BaseModel] = Config, prefix: str = "") -> set[str]:
    """Every dotted key the schema defines (sections and their keys)."""
    out = set()
    for name, field in model.model_fields.items():
        out.add(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out |= schema_keys(field.annotation, f"{prefix}{name}.")
    return out
