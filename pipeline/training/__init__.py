"""Stage two's training: reader (cache -> batches), engine (one epoch), schedule, checkpoints, fit (the loop).

`load_run(run_dir) -> (StageTwoModules, config)`: a trained run's modules, as evaluation reads them. Text
vectors for users and for the downstream tasks come from pipeline/grounded/ (GroundedEncoder, load_run_encoder)."""
from pipeline.training.checkpoint import load_run

__all__ = ["load_run"]
