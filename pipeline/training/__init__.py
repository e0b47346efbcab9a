"""Stage two's training: reader (cache -> batches), engine (one epoch), schedule, checkpoints, fit (the loop).

`load_run(run_dir) -> (GroundingModel, config)` is the public way to get a trained model, e.g. `model.f_g`
for the downstream tasks."""
from pipeline.training.checkpoint import load_run

__all__ = ["load_run"]
