"""The one-cycle policy (Smith & Topin), exactly as PyTorch's `OneCycleLR`."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.schedules._base import Schedule

_register = keras.saving.register_keras_serializable(package="keras_trainkit")

ANNEAL_STRATEGIES = ("cos", "linear")


def _total_steps(total_steps: Any, epochs: Any, steps_per_epoch: Any) -> int:
    """`total_steps`, or `epochs * steps_per_epoch`; exactly one of the two."""
    if total_steps is not None:
        if epochs is not None or steps_per_epoch is not None:
            raise ValueError(
                "Give either `total_steps` or both `epochs` and `steps_per_epoch`, not both. "
                f"Received: total_steps={total_steps!r}, epochs={epochs!r}, "
                f"steps_per_epoch={steps_per_epoch!r}"
            )
        return v.integer("total_steps", total_steps, low=1)
    if epochs is None or steps_per_epoch is None:
        raise ValueError(
            "Give either `total_steps` or both `epochs` and `steps_per_epoch`. "
            f"Received: total_steps={total_steps!r}, epochs={epochs!r}, "
            f"steps_per_epoch={steps_per_epoch!r}"
        )
    return v.integer("epochs", epochs, low=1) * v.integer("steps_per_epoch", steps_per_epoch, low=1)


class _OneCyclePhases(Schedule):
    """Phase bookkeeping shared by the learning-rate and momentum schedules.

    `_phase_values()` gives, per phase, the value at its start and at its end;
    the phases end at torch's `end_step`s (float64, computed as torch does).
    """

    def _init_phases(self, total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy,
                     three_phase):
        self.total_steps = total_steps
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self._total = _total_steps(total_steps, epochs, steps_per_epoch)
        self.pct_start = v.real("pct_start", pct_start, low=0.0, high=1.0)
        self.anneal_strategy = v.one_of("anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
        self.three_phase = v.boolean("three_phase", three_phase)
        total = self._total
        if self.three_phase:
            self._ends = [float(self.pct_start * total) - 1, float(2 * self.pct_start * total) - 2,
                          float(total - 1)]
        else:
            self._ends = [float(self.pct_start * total) - 1, float(total - 1)]

    @property
    def cycle_steps(self) -> int:
        """The number of updates in the cycle (`total_steps`, or `epochs * steps_per_epoch`)."""
        return self._total

    def _phase_values(self) -> list[tuple[float, float]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _anneal(self, start: float, end: float, done, remaining):
        """From `start` (done = 0, remaining = 1) to `end` (done = 1, remaining = 0).

        torch computes `end + (start - end) * (1 + cos(pi * pct)) / 2` with
        `pct = done`. Since `(1 + cos(pi * p)) / 2 = 1 - sin(pi * p / 2) ** 2`,
        the first half is written from `start` with `sin(pi * done / 2) ** 2`
        and the second from `end` with `sin(pi * remaining / 2) ** 2`: each
        half adds a small term to its nearer end value, which keeps float32's
        relative precision where one end value is tiny (the rate's
        `initial`, `min`).
        """
        if self.anneal_strategy == "cos":
            near_start = ops.square(ops.sin((0.5 * math.pi) * done))
            near_end = ops.square(ops.sin((0.5 * math.pi) * remaining))
        else:
            near_start, near_end = done, remaining
        return ops.where(done < 0.5, start + (end - start) * near_start,
                         end + (start - end) * near_end)

    def compute(self, step):
        # Past the cycle the value holds at that of the last update, total_steps - 1.
        step = ops.minimum(step, float(self._total - 1))
        values = self._phase_values()
        starts = [0.0, *self._ends[:-1]]
        result = None
        for i in reversed(range(len(self._ends))):
            start_value, end_value = values[i]
            length = self._ends[i] - starts[i]
            if length == 0.0:
                # torch divides 0 by 0 here (a first phase of length 0 that
                # update 0 lands on): the phase's end value.
                phase = ops.zeros_like(step) + end_value
            else:
                done = (step - starts[i]) * (1.0 / length)
                remaining = (self._ends[i] - step) * (1.0 / length)
                phase = self._anneal(start_value, end_value, done, remaining)
            # torch takes the first phase with step <= end_step; the last takes the rest.
            result = phase if result is None else ops.where(step <= self._ends[i], phase, result)
        return ops.cast(result, "float32")

    def _phase_config(self) -> dict[str, Any]:
        return {
            "total_steps": self.total_steps,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "pct_start": self.pct_start,
            "anneal_strategy": self.anneal_strategy,
            "three_phase": self.three_phase,
        }


_PHASE_DOC = """
        total_steps: Number of updates in the cycle, an int >= 1. Give this or
            both `epochs` and `steps_per_epoch`. Defaults to `None`.
        epochs: Number of epochs, an int >= 1 (with `steps_per_epoch`).
            Defaults to `None`.
        steps_per_epoch: Updates per epoch, an int >= 1 (with `epochs`).
            Defaults to `None`.
        pct_start: Fraction of the cycle spent increasing the rate, in
            [0, 1]. Defaults to `0.3`.
        anneal_strategy: `"cos"` or `"linear"` interpolation within each
            phase. Defaults to `"cos"`.
        three_phase: Use the three phases of fastai's original policy (see
            above) instead of two. Defaults to `False`."""


@_register
class OneCycle(_OneCyclePhases):

    #: Every rate of the cycle is proportional to `max_learning_rate`.
    base_attribute = "max_learning_rate"

    def __init__(self, max_learning_rate: float, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None,
                 pct_start: float = 0.3, anneal_strategy: str = "cos", div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 name: str = "OneCycle"):
        super().__init__()
        self.max_learning_rate = v.positive("max_learning_rate", max_learning_rate)
        self._init_phases(total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy,
                          three_phase)
        self.div_factor = v.positive("div_factor", div_factor)
        self.final_div_factor = v.positive("final_div_factor", final_div_factor)
        self.name = name

    @property
    def initial_learning_rate(self) -> float:
        """`max_learning_rate / div_factor`: the rate at update 0."""
        return self.max_learning_rate / self.div_factor

    @property
    def min_learning_rate(self) -> float:
        """`initial_learning_rate / final_div_factor`: the rate at the end."""
        return self.initial_learning_rate / self.final_div_factor

    def _phase_values(self):
        peak, initial, low = self.max_learning_rate, self.initial_learning_rate, self.min_learning_rate
        if self.three_phase:
            return [(initial, peak), (peak, initial), (initial, low)]
        return [(initial, peak), (peak, low)]

    def momentum_schedule(self, base_momentum: float = 0.85,
                          max_momentum: float = 0.95) -> OneCycleMomentum:
        """The momentum cycle that goes with this rate (same phases).

        Args:
            base_momentum: Momentum at the rate's peak, in [0, 1). Defaults to `0.85`.
            max_momentum: Momentum at the start and the end, in [0, 1).
                Defaults to `0.95`.

        Returns:
            A `OneCycleMomentum` with this schedule's phase arguments.
        """
        return OneCycleMomentum(base_momentum=base_momentum, max_momentum=max_momentum,
                                **self._phase_config())

    def get_config(self):
        return {
            "max_learning_rate": self.max_learning_rate,
            **self._phase_config(),
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
            "name": self.name,
        }


OneCycle.__doc__ = (
    """The one-cycle learning rate, equal to PyTorch's `OneCycleLR` per update.

    With `T = total_steps`, `initial = max_learning_rate / div_factor` and
    `min = initial / final_div_factor`, the rate is annealed between these
    points (phase ends as torch computes them):

    - two phases (default): `initial -> max_learning_rate` over updates
      `0 .. pct_start * T - 1`, then `max_learning_rate -> min` until `T - 1`;
    - `three_phase=True`: `initial -> max_learning_rate` until
      `pct_start * T - 1`, back to `initial` until `2 * pct_start * T - 2`,
      then `initial -> min` until `T - 1`.

    Within a phase from step `s` (value `a`) to step `e` (value `b`), with
    `p = (t - s) / (e - s)`::

        cos:     lr(t) = b + (a - b) * (1 + cos(pi * p)) / 2
        linear:  lr(t) = a + (b - a) * p

    Updates `t = 0 .. T - 1` get exactly torch's rates (tested against golden
    trajectories from torch to a relative 1e-6). From update `T` on the rate
    holds at its value at update `T - 1`, which is `min` (unless `pct_start`
    is so large that the cycle ends before its last phase, e.g.
    `pct_start=1.0`, which ends at the peak): torch instead extrapolates
    the last phase at `t = T` (with `"linear"` to a negative rate) and raises
    beyond it. Where torch divides by zero (a first phase of length 0, e.g.
    `pct_start * T == 1`), the phase's end value is used.

    The matching momentum cycle (SGD's `momentum`, Adam's `beta_1`) is
    `momentum_schedule()`; `keras_trainkit.callbacks.OneCycle` applies both.

    Args:
        max_learning_rate: Peak rate, a finite float > 0 (torch's `max_lr`).""" + _PHASE_DOC + """
        div_factor: `initial = max_learning_rate / div_factor`, > 0.
            Defaults to `25.0`.
        final_div_factor: `min = initial / final_div_factor`, > 0.
            Defaults to `1e4`.
        name: Defaults to `"OneCycle"`.

    References:
        Smith & Topin, 2017. Super-Convergence: Very Fast Training of Neural
        Networks Using Large Learning Rates. https://arxiv.org/abs/1708.07120

        Smith, 2018. A disciplined approach to neural network hyper-parameters:
        Part 1. https://arxiv.org/abs/1803.09820

    Examples:
        >>> sched = OneCycle(0.1, total_steps=100)
        >>> sched([0, 29, 99, 150])  # initial, peak, min, held
        array([4.e-03, 1.e-01, 4.e-07, 4.e-07], dtype=float32)
        >>> # keras.optimizers.SGD(learning_rate=sched, momentum=0.9)
    """
)


@_register
class OneCycleMomentum(_OneCyclePhases):

    base_attribute = None  # a momentum, not a rate: nothing to rescale

    def __init__(self, base_momentum: float = 0.85, max_momentum: float = 0.95,
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", three_phase: bool = False,
                 name: str = "OneCycleMomentum"):
        super().__init__()
        self.base_momentum = v.real("base_momentum", base_momentum, low=0.0, high=1.0,
                                    high_inclusive=False)
        self.max_momentum = v.real("max_momentum", max_momentum, low=0.0, high=1.0,
                                   high_inclusive=False)
        self._init_phases(total_steps, epochs, steps_per_epoch, pct_start, anneal_strategy,
                          three_phase)
        self.name = name

    def _phase_values(self):
        low, high = self.base_momentum, self.max_momentum
        if self.three_phase:
            return [(high, low), (low, high), (high, high)]
        return [(high, low), (low, high)]

    def get_config(self):
        return {
            "base_momentum": self.base_momentum,
            "max_momentum": self.max_momentum,
            **self._phase_config(),
            "name": self.name,
        }


OneCycleMomentum.__doc__ = (
    """The one-cycle momentum, equal to PyTorch's `OneCycleLR(cycle_momentum=True)`.

    The momentum moves opposite to the rate over the same phases:
    `max_momentum -> base_momentum` while the rate rises, then back to
    `max_momentum` (two phases); with `three_phase=True` it rises back over
    the second phase and stays at `max_momentum` during the third. The
    interpolation is the rate's (`anneal_strategy`). Updates `0 .. T - 1`
    get exactly the momentum torch sets (SGD's `momentum`, or `betas[0]` of
    Adam-type optimizers); from update `T` on it holds at its value at update
    `T - 1` (`max_momentum`, as for the rate's `min`).

    It is a schedule of the update count like the learning-rate schedules
    (callable on ints, numpy arrays or tensors, serializable), but drives a
    momentum: `keras_trainkit.callbacks.OneCycle` applies it in the train step
    to SGD's `momentum` or the Adam family's `beta_1`. Usually made with
    `OneCycle(...).momentum_schedule()`.

    Args:
        base_momentum: Momentum at the rate's peak, in [0, 1). Defaults to `0.85`.
        max_momentum: Momentum at the start and the end, in [0, 1).
            Defaults to `0.95`.""" + _PHASE_DOC + """
        name: Defaults to `"OneCycleMomentum"`.

    Examples:
        >>> OneCycleMomentum(total_steps=100)([0, 29, 99, 150])
        array([0.95, 0.85, 0.95, 0.95], dtype=float32)
    """
)
