"""Callbacks for `model.fit(callbacks=[...])`."""

from keras_trainkit.callbacks._early_stopping import EarlyStopping
from keras_trainkit.callbacks._grad_norm import GradientNormLogger
from keras_trainkit.callbacks._lr_callbacks import (
    CosineDecay,
    ExponentialDecay,
    InverseTimeDecay,
    LearningRateSchedule,
    PolynomialDecay,
    StepDecay,
    WarmUp,
)

__all__ = [
    "EarlyStopping",
    "CosineDecay",
    "ExponentialDecay",
    "GradientNormLogger",
    "InverseTimeDecay",
    "LearningRateSchedule",
    "PolynomialDecay",
    "StepDecay",
    "WarmUp",
]
