"""Learning-rate schedules: pure functions of the optimizer's update count.

Every class is a `keras.optimizers.schedules.LearningRateSchedule`, registered
for serialization under the package name `keras_trainkit`, usable as
`keras.optimizers.Adam(learning_rate=schedule)`, and callable on Python ints or
numpy arrays (returning numpy) for plotting.
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
    "PolynomialDecay",
    "Schedule",
    "StepDecay",
    "WarmUp",
]
