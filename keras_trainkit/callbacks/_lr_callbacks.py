"""Learning-rate callbacks: each applies the schedule of the same name.

The math lives in `keras_trainkit.schedules`; these callbacks only decide which
schedule drives the optimizer and hand it to the optimizer itself, so the rate
is computed inside the compiled train step at every update, keyed on
`optimizer.iterations` (real updates: under `gradient_accumulation_steps` one
update per accumulation cycle). Warm-up therefore never restarts at an epoch
boundary, a second `fit()` continues, and a run resumed by
`keras.callbacks.BackupAndRestore` (which restores `iterations`) continues.

Composition: one decay callback (`StepDecay`, `ExponentialDecay`,
`PolynomialDecay`, `InverseTimeDecay`, `CosineDecay` or
`LearningRateSchedule`) replaces the optimizer's own rate; a `WarmUp` callback
wraps whatever drives the optimizer (the decay callback's schedule, or the
optimizer's own float or schedule). The order of the callbacks in the list does
not matter: `[WarmUp(w), ExponentialDecay(...)]` runs exactly
`schedules.WarmUp(schedules.ExponentialDecay(lr0, ...), w)`.
"""

from __future__ import annotations

import copy
from typing import Any

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit import schedules
from keras_trainkit.callbacks import _lr_control, _summaries
from keras_trainkit.schedules._base import check_schedule


class LearningRateSchedule(keras.callbacks.Callback):
    """Drives the optimizer with any schedule, inside the compiled train step.

    Unlike `keras.callbacks.LearningRateScheduler`, it steps per optimizer
    update with no per-batch Python, works when the model was compiled with a
    float or with a schedule, and coexists with
    `keras.callbacks.ReduceLROnPlateau` (whose reductions then scale the
    scheduled rate).

    Logs: `learning_rate` (the rate used by the epoch's last update) goes into
    the epoch logs, hence History and the progress bar's epoch line (a
    per-step log entry would cost a host conversion every step). When
    `log_dir` is given, or a `keras.callbacks.TensorBoard` is in the same
    `fit()`, the rate of every update is written as the scalar
    `learning_rate` into the `train` run, at step `n` = the n-th update (so
    the step does not reset on a second `fit()` or a resume). These are
    computed from the schedule at each epoch end: no per-step cost.

    Args:
        schedule: A float or any `keras.optimizers.schedules.LearningRateSchedule`
            (ours or Keras'), a function of the update count.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.

    Example:
        >>> from keras_trainkit import schedules, callbacks
        >>> cb = callbacks.LearningRateSchedule(
        ...     schedules.JoinSchedules([schedules.WarmUp(1e-3, 100), 1e-3], [100]))
        >>> # model.fit(x, y, callbacks=[cb])
    """

    _role = "decay"

    def __init__(self, schedule: Any = None, log_dir: str | None = None, verbose: int = 0):
        super().__init__()
        if type(self) is LearningRateSchedule:
            self.schedule = check_schedule("schedule", schedule)
        self.log_dir = log_dir
        self.verbose = v.integer("verbose", verbose, low=0)
        self._controllers: list[Any] = []

    # What the controller asks for.
    def _build_schedule(self, optimizer, inner=None):
        return self.schedule

    # -- hooks --------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._controllers = _lr_control.attach(self, self.model)
        dirs = _summaries.tensorboard_dirs(self, self.log_dir)
        for controller in self._controllers:
            controller.summaries.add_dirs(dirs)

    def on_epoch_begin(self, epoch, logs=None):
        for controller in self._controllers:
            controller.start_epoch()

    def on_epoch_end(self, epoch, logs=None):
        for controller in self._controllers:
            controller.write_summaries("learning_rate")
        if logs is not None:
            logs.update(_lr_control.rate_logs(self.model))
        if self.verbose:
            rates = ", ".join(f"{float(ops.convert_to_numpy(c())):.6g}" for c in self._controllers)
            print(f"\nEpoch {epoch + 1}: learning rate for the next update: {rates}")

    def on_train_end(self, logs=None):
        for controller in self._controllers:
            controller.write_summaries("learning_rate")
        _lr_control.detach(self, self.model)
        self._controllers = []

    def __deepcopy__(self, memo):
        """Copies the configuration, never the model (Keras Tuner copies per trial)."""
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            skip = key in ("_model", "params", "_controllers")
            clone.__dict__[key] = None if skip else copy.deepcopy(value, memo)
        clone._controllers = []
        return clone


class _DecayCallback(LearningRateSchedule):
    """Builds `schedule_class(initial_learning_rate=base, **self._kwargs)`."""

    schedule_class: type = schedules.Schedule

    def __init__(self, initial_learning_rate: float | None, log_dir, verbose, **kwargs):
        super().__init__(log_dir=log_dir, verbose=verbose)
        if initial_learning_rate is not None:
            v.positive("initial_learning_rate", initial_learning_rate)
        self.initial_learning_rate = initial_learning_rate
        self._kwargs = kwargs
        for key, value in kwargs.items():
            setattr(self, key, value)
        # Validate everything now, with a stand-in base rate when it is unknown.
        self.schedule_class(initial_learning_rate=initial_learning_rate or 1.0, **kwargs)

    def _build_schedule(self, optimizer, inner=None):
        base = self.initial_learning_rate
        if base is None:
            # Each optimizer's own rate at update 0. The callbacks never write
            # it (assignments during fit() rescale instead), so every fit()
            # reads the same value: no cache, and each sub-optimizer of a
            # MultiOptimizer keeps its own base.
            base = _lr_control.rate_at_zero(_lr_control.own_rate(optimizer))
        return self.schedule_class(initial_learning_rate=base, **self._kwargs)


_BASE_DOC = """
    Args:
        initial_learning_rate: Rate at update 0. `None` uses the optimizer's own
            rate at update 0 (its float, or its schedule's value at step 0);
            each sub-optimizer of a `MultiOptimizer` keeps its own. Defaults to `None`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.
        **kwargs: The schedule's other arguments (see above).
"""


class StepDecay(_DecayCallback):
    """Applies `schedules.StepDecay` per update: `lr0 * gamma ** k`.

    `k` counts the `step_size` periods (or the `milestones`) passed, in
    optimizer updates. See `keras_trainkit.schedules.StepDecay`.
    """ + _BASE_DOC

    schedule_class = schedules.StepDecay

    def __init__(self, step_size: int | None = None, gamma: float = 0.1,
                 milestones: list[int] | None = None, initial_learning_rate: float | None = None,
                 log_dir: str | None = None, verbose: int = 0):
        super().__init__(initial_learning_rate, log_dir, verbose,
                         step_size=step_size, gamma=gamma, milestones=milestones)


class ExponentialDecay(_DecayCallback):
    """Applies `schedules.ExponentialDecay`: `lr0 * decay_rate ** (t / decay_steps)`.
    """ + _BASE_DOC

    schedule_class = schedules.ExponentialDecay

    def __init__(self, decay_steps: float, decay_rate: float, staircase: bool = False,
                 initial_learning_rate: float | None = None, log_dir: str | None = None,
                 verbose: int = 0):
        super().__init__(initial_learning_rate, log_dir, verbose,
                         decay_steps=decay_steps, decay_rate=decay_rate, staircase=staircase)


class PolynomialDecay(_DecayCallback):
    """Applies `schedules.PolynomialDecay`:
    `(lr0 - end) * (1 - min(t, T) / T) ** power + end`.
    """ + _BASE_DOC

    schedule_class = schedules.PolynomialDecay

    def __init__(self, decay_steps: float, end_learning_rate: float = 0.0001, power: float = 1.0,
                 cycle: bool = False, initial_learning_rate: float | None = None,
                 log_dir: str | None = None, verbose: int = 0):
        super().__init__(initial_learning_rate, log_dir, verbose, decay_steps=decay_steps,
                         end_learning_rate=end_learning_rate, power=power, cycle=cycle)


class InverseTimeDecay(_DecayCallback):
    """Applies `schedules.InverseTimeDecay`: `lr0 / (1 + decay_rate * t / decay_steps)`.
    """ + _BASE_DOC

    schedule_class = schedules.InverseTimeDecay

    def __init__(self, decay_steps: float, decay_rate: float, staircase: bool = False,
                 initial_learning_rate: float | None = None, log_dir: str | None = None,
                 verbose: int = 0):
        super().__init__(initial_learning_rate, log_dir, verbose,
                         decay_steps=decay_steps, decay_rate=decay_rate, staircase=staircase)


class CosineDecay(_DecayCallback):
    """Applies `schedules.CosineDecay` (floor `alpha`, optional warm restarts).
    """ + _BASE_DOC

    schedule_class = schedules.CosineDecay

    def __init__(self, decay_steps: float, alpha: float = 0.0, restarts: bool = False,
                 t_mul: float = 2.0, m_mul: float = 1.0,
                 initial_learning_rate: float | None = None, log_dir: str | None = None,
                 verbose: int = 0):
        super().__init__(initial_learning_rate, log_dir, verbose, decay_steps=decay_steps,
                         alpha=alpha, restarts=restarts, t_mul=t_mul, m_mul=m_mul)


class WarmUp(LearningRateSchedule):
    """Warms up whatever drives the optimizer, applying `schedules.WarmUp`.

    It wraps the decay callback in the same `fit()` if there is one, else the
    optimizer's own rate (a float or a schedule it was compiled with). With the
    default `offset=True` the wrapped schedule starts at its own step 0 once
    the warm-up ends (its `decay_steps` count updates after the warm-up).

    Args:
        warmup_steps: Ramp length in optimizer updates, an int >= 0.
        initial_learning_rate: Rate at update 0. Defaults to `0.0`.
        shape: `"linear"`, `"exponential"` or `"cosine"`. Defaults to `"linear"`.
        offset: Start the wrapped schedule at its step 0 after the ramp.
            Defaults to `True`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.
    """

    _role = "warmup"

    def __init__(self, warmup_steps: int, initial_learning_rate: float = 0.0,
                 shape: str = "linear", offset: bool = True, log_dir: str | None = None,
                 verbose: int = 0):
        super().__init__(log_dir=log_dir, verbose=verbose)
        self._kwargs = dict(warmup_steps=warmup_steps, initial_learning_rate=initial_learning_rate,
                            shape=shape, offset=offset)
        schedules.WarmUp(1.0, **self._kwargs)  # validates eagerly
        self.warmup_steps = warmup_steps
        self.initial_learning_rate = initial_learning_rate
        self.shape = shape
        self.offset = offset

    def _build_schedule(self, optimizer, inner=None):
        return schedules.WarmUp(inner, **self._kwargs)
