"""Text-only downstream tasks (GLUE, SQuAD) with the grounded representation `[h; f_g(h)]`.

    glue.py, squad.py        official file formats -> examples (SQuAD: + overlapping windows)
    features.py              examples -> pre-tokenised items -> the stage-one text cache
    heads.py                 pooled / span heads over [h; g] or h (grounded/vectors.py builds those)
    head_training.py         the head-training loop both modes share (train_head)
    probe.py, finetune.py    the two modes: frozen encoder on cached states; encoder unfrozen
    squad_postprocess.py     n-best spans and the v2.0 no-answer decision
    official_metrics.py      the official GLUE and SQuAD metrics
    tasks.py, report.py      one evaluation end to end; the baseline-vs-grounded comparison
    fixtures.py              small files in the official formats, for tests and docs/downstream.md
"""
