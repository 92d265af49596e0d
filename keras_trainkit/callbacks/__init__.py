"""Callbacks for `model.fit(callbacks=[...])`."""

from keras_trainkit.callbacks._batch_size import BatchSizeScheduler, ScheduledBatches
from keras_trainkit.callbacks._early_stopping import EarlyStopping
from keras_trainkit.callbacks._fine_tuning import (
    DiscriminativeOptimizer,
    GradualUnfreezing,
    discriminative_optimizer,
)
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
    "DiscriminativeOptimizer",
    "GradualUnfreezing",
    "ScheduledBatches",
    "discriminative_optimizer",
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
