"""Batch-size schedules: pure functions of the epoch.

These are not learning-rate schedules: the batch size can only change between
epochs (it fixes how the data is cut into batches), so a batch-size schedule maps
an epoch index to an integer batch size. `callbacks.BatchSizeScheduler` applies
one to a `callbacks.ScheduledBatches` data wrapper during `fit()`, clamps it to
`[min_batch_size, max_batch_size]` and optionally couples the learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from keras_trainkit import _validation as v


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


class BatchSizeSchedule:
    """Base class: a batch size as a pure function of the epoch index.

    Subclasses implement `compute(epoch) -> float` (the unrounded size) and
    `get_config()`. Calling the schedule validates the epoch, rounds half up
    and returns an int >= 1.
    """

    def __call__(self, epoch: int) -> int:
        epoch = v.integer("epoch", epoch, low=0)
        return max(1, _round_half_up(self.compute(epoch)))

    def compute(self, epoch: int) -> float:  # pragma: no cover - abstract
        """The unrounded batch size at `epoch`."""
        raise NotImplementedError

    def learning_rate_factor(self, epoch: int) -> float:
        """Multiplier of the learning rate this schedule prescribes at `epoch`.

        `1.0` unless the schedule hands part of its progression over to the
        learning rate (see `BatchSizeIncrease(max_batch_size=...)`).
        `callbacks.BatchSizeScheduler` applies it on top of `lr_scaling`.
        """
        v.integer("epoch", epoch, low=0)
        return 1.0

    def get_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The constructor's arguments (`cls(**config)` rebuilds the schedule)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BatchSizeSchedule:
        """The schedule `get_config()` describes."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={val!r}" for k, val in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = object.__hash__


class BatchSizeDecay(BatchSizeSchedule):
    """Polynomial decay of the batch size over `decay_epochs` epochs.

    ```
    b(e) = (b0 - b_end) * (1 - min(e, T) / T) ** power + b_end
    ```

    rounded half up, at least 1. With `end_batch_size=0` this is the guides'
    `b_t = b * (1 - t/T) ** beta` (clamped to 1 at the end); past `T` the
    schedule holds `end_batch_size`.

    Args:
        initial_batch_size: `b0`, the size at epoch 0, an int >= 1.
        decay_epochs: `T`, epochs to reach `end_batch_size`, an int >= 1.
        power: `beta`, a finite float > 0 (1 is linear). Defaults to `1.0`.
        end_batch_size: `b_end`, an int in `[0, initial_batch_size]`.
            Defaults to `1`.

    Examples:
        >>> s = BatchSizeDecay(128, decay_epochs=4, power=1.0, end_batch_size=0)
        >>> [s(e) for e in range(6)]
        [128, 96, 64, 32, 1, 1]
    """

    def __init__(self, initial_batch_size: int, decay_epochs: int, power: float = 1.0,
                 end_batch_size: int = 1):
        self.initial_batch_size = v.integer("initial_batch_size", initial_batch_size, low=1)
        self.decay_epochs = v.integer("decay_epochs", decay_epochs, low=1)
        self.power = v.positive("power", power)
        self.end_batch_size = v.integer("end_batch_size", end_batch_size, low=0)
        if self.end_batch_size > self.initial_batch_size:
            raise ValueError(
                "Argument `end_batch_size` must be <= initial_batch_size="
                f"{self.initial_batch_size}. Received: end_batch_size={end_batch_size!r}"
            )

    def compute(self, epoch: int) -> float:
        frac = 1.0 - min(epoch, self.decay_epochs) / self.decay_epochs
        span = self.initial_batch_size - self.end_batch_size
        return span * frac**self.power + self.end_batch_size

    def get_config(self) -> dict[str, Any]:
        return {"initial_batch_size": self.initial_batch_size, "decay_epochs": self.decay_epochs,
                "power": self.power, "end_batch_size": self.end_batch_size}


class BatchSizeIncrease(BatchSizeSchedule):
    """Step increases of the batch size (Smith et al., 2018).

    ```
    requested(e) = b0 * factor ** k(e),   k(e) = floor(e / step_size)
                                          or #{m in milestones : m <= e}
    b(e)         = min(requested(e), max_batch_size)        (rounded half up)
    ```

    "Don't decay the learning rate, increase the batch size": where a step
    schedule would divide the learning rate by `factor`, multiply the batch
    size by `factor` instead (with the learning rate held, i.e.
    `BatchSizeScheduler(lr_scaling=None)`), which reduces the gradient noise
    scale `lr * N / B` by the same amount in fewer, larger updates. Once the
    batch size reaches `max_batch_size`, the paper decays the learning rate for
    the rest of the progression: `learning_rate_factor(e) = b(e) /
    requested(e)`, which `callbacks.BatchSizeScheduler` applies. Without
    `max_batch_size` this is a plain step increase (the callback's own
    `max_batch_size` then only clamps).

    Args:
        initial_batch_size: `b0`, the size at epoch 0, an int >= 1.
        factor: Multiplier at each step, a finite float > 1. Defaults to `2.0`.
        step_size: Increase every `step_size` epochs, an int >= 1. Give this
            or `milestones`. Defaults to `None`.
        milestones: Strictly increasing epochs >= 1 at which to increase.
            Defaults to `None`.
        max_batch_size: Largest batch size, an int >= initial_batch_size, past
            which the learning rate is decayed instead; `None` for no cap.
            Defaults to `None`.

    References:
        Smith, Kindermans, Ying and Le, "Don't Decay the Learning Rate,
        Increase the Batch Size", ICLR 2018. https://arxiv.org/abs/1711.00489

    Examples:
        >>> s = BatchSizeIncrease(32, factor=5, milestones=[2, 4, 6], max_batch_size=1000)
        >>> [s(e) for e in range(8)], [s.learning_rate_factor(e) for e in (5, 6)]
        ([32, 32, 160, 160, 800, 800, 1000, 1000], [1.0, 0.25])
    """

    def __init__(self, initial_batch_size: int, factor: float = 2.0, step_size: int | None = None,
                 milestones: Sequence[int] | None = None, max_batch_size: int | None = None):
        self.initial_batch_size = v.integer("initial_batch_size", initial_batch_size, low=1)
        self.factor = v.real("factor", factor, low=1.0, low_inclusive=False)
        if (step_size is None) == (milestones is None):
            raise ValueError(
                "Exactly one of `step_size` and `milestones` must be given. "
                f"Received: step_size={step_size!r}, milestones={milestones!r}"
            )
        self.step_size = None if step_size is None else v.integer("step_size", step_size, low=1)
        self.milestones = (None if milestones is None
                           else v.increasing_integers("milestones", milestones, low=1))
        if max_batch_size is not None:
            max_batch_size = v.integer("max_batch_size", max_batch_size, low=self.initial_batch_size)
        self.max_batch_size = max_batch_size

    def _steps(self, epoch: int) -> int:
        if self.step_size is not None:
            return epoch // self.step_size
        return sum(1 for m in self.milestones if m <= epoch)

    def requested(self, epoch: int) -> float:
        """The uncapped size `b0 * factor ** k(e)`."""
        epoch = v.integer("epoch", epoch, low=0)
        return self.initial_batch_size * self.factor ** self._steps(epoch)

    def compute(self, epoch: int) -> float:
        requested = self.requested(epoch)
        return requested if self.max_batch_size is None else min(requested, self.max_batch_size)

    def learning_rate_factor(self, epoch: int) -> float:
        requested = self.requested(epoch)
        if self.max_batch_size is None or requested <= self.max_batch_size:
            return 1.0
        return self(epoch) / requested

    def get_config(self) -> dict[str, Any]:
        return {"initial_batch_size": self.initial_batch_size, "factor": self.factor,
                "step_size": self.step_size, "milestones": self.milestones,
                "max_batch_size": self.max_batch_size}
