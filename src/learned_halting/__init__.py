"""Learned LSTM optimizers with adaptive halting on Student-t regression (the study's code).

Modules: ``problem`` (the optimizee), ``priors`` (stopping priors, horizons, loss weights),
``networks`` (the LSTM optimizer), ``rollout`` (the optimisation loop shared by training and
evaluation), ``training`` (meta-training), ``evaluation`` (evaluation and model selection), ``halting``
(q(t|x,T) and stopping rules), ``plotting`` (figures), ``storage`` (Parquet and checkpoint I/O),
``settings`` (typed config).
"""

__version__ = "0.1.0"
