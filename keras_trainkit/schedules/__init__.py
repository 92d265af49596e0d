"""Schedules: pure functions of a training counter.

Learning-rate schedules (`Constant`, `StepDecay`, `ExponentialDecay`,
`PolynomialDecay`, `InverseTimeDecay`, `CosineDecay`, `CosineDecayRestarts`,
`WarmUp`, `JoinSchedules`, `OneCycle`) are `keras.optimizers.schedules.LearningRateSchedule`
subclasses of the optimizer's update count, registered for serialization under
the package name `keras_trainkit`, usable as
`keras.optimizers.Adam(learning_rate=schedule)`, and callable on Python ints or
numpy arrays (returning numpy) for plotting.

Batch-size schedules (`BatchSizeDecay`, `BatchSizeIncrease`) are functions of
the epoch, used by `keras_trainkit.callbacks.BatchSizeScheduler`.
"""

from keras_trainkit.schedules._base import Schedule
from keras_trainkit.schedules._batch_size import (
    BatchSizeDecay,
    BatchSizeIncrease,
    BatchSizeSchedule,
)
from keras_trainkit.schedules._cosine import CosineDecay, CosineDecayRestarts
from keras_trainkit.schedules._decay import (
    Constant,
    ExponentialDecay,
    InverseTimeDecay,
    PolynomialDecay,
    StepDecay,
)
from keras_trainkit.schedules._one_cycle import OneCycle, OneCycleMomentum
from keras_trainkit.schedules._warmup import JoinSchedules, WarmUp

__all__ = [
    "BatchSizeDecay",
    "BatchSizeIncrease",
    "BatchSizeSchedule",
    "Constant",
    "CosineDecay",
    "CosineDecayRestarts",
    "ExponentialDecay",
    "InverseTimeDecay",
    "JoinSchedules",
    "OneCycle",
    "OneCycleMomentum",
    "PolynomialDecay",
    "Schedule",
    "StepDecay",
    "WarmUp",
]
