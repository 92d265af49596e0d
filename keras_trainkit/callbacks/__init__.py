"""Callbacks for `model.fit(callbacks=[...])`."""

import warnings as _warnings

from keras_trainkit.callbacks._batch_size import BatchSizeScheduler
from keras_trainkit.callbacks._early_stopping import EarlyStopping
from keras_trainkit.callbacks._fine_tuning import GradualUnfreezing
from keras_trainkit.callbacks._grad_norm import GradientNormLogger
from keras_trainkit.callbacks._lr_callbacks import (
    CosineDecay,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    OneCycle,
    PolynomialDecay,
    StepDecay,
    WarmUp,
)
from keras_trainkit.callbacks._tensorboard import TensorBoard

__all__ = [
    "BatchSizeScheduler",
    "GradualUnfreezing",
    "EarlyStopping",
    "CosineDecay",
    "ExponentialDecay",
    "GradientNormLogger",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "OneCycle",
    "PolynomialDecay",
    "StepDecay",
    "TensorBoard",
    "WarmUp",
]


# Moved in 0.2; the old paths work, with a DeprecationWarning, until 0.3.
_MOVED = {
    "ScheduledBatches": "keras_trainkit.data",
    "DiscriminativeOptimizer": "keras_trainkit.optimizers",
    "discriminative_optimizer": "keras_trainkit.optimizers",
}


def __getattr__(name):
    if name in _MOVED:
        import importlib

        _warnings.warn(
            f"keras_trainkit.callbacks.{name} moved to {_MOVED[name]}.{name}; the old path "
            "will be removed in keras_trainkit 0.3.", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'keras_trainkit.callbacks' has no attribute {name!r}")
