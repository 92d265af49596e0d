"""Learning-rate callbacks: each applies the schedule of the same name.

The math lives in `keras_trainkit.schedules`; these callbacks only decide which
schedule drives the optimizer and hand it to the optimizer itself (see
`_lr_control`), so the rate is computed inside the compiled train step at
every update, keyed on `optimizer.iterations` (real updates: under
`gradient_accumulation_steps` one update per accumulation cycle). Warm-up
therefore never restarts at an epoch boundary, a second `fit()` continues, and
a run resumed by `keras.callbacks.BackupAndRestore` (which restores
`iterations`) continues.

Composition: one decay callback (`StepDecay`, `ExponentialDecay`,
`PolynomialDecay`, `InverseTimeDecay`, `CosineDecay` or
`LearningRateSchedule`) replaces the optimizer's own rate; a `WarmUp` callback
wraps whatever drives the optimizer (the decay callback's schedule, or the
optimizer's own float or schedule). The order of the callbacks in the list does
not matter: `[WarmUp(w), ExponentialDecay(...)]` runs exactly
`schedules.WarmUp(schedules.ExponentialDecay(lr0, ...), w)`.

The five decay callbacks are one class, `_DecayCallback`, made by
`_decay_callback(schedule_class, ...)`: they differ only in the schedule
they build and in its arguments.
"""

from __future__ import annotations

import inspect
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit import schedules
from keras_trainkit.callbacks import _lr_control, _summaries
from keras_trainkit.callbacks._session import Participant, Session
from keras_trainkit.schedules._base import check_schedule

__all__ = ["CosineDecay", "ExponentialDecay", "InverseTimeDecay", "LearningRateSchedule", "OneCycle",
           "PolynomialDecay", "StepDecay", "WarmUp"]


class LearningRateSchedule(Participant):
    """Drives the optimizer with any schedule, inside the compiled train step.

    Unlike `keras.callbacks.LearningRateScheduler`, it steps per optimizer
    update with no per-batch Python, works when the model was compiled with a
    float or with a schedule, and coexists with
    `keras.callbacks.ReduceLROnPlateau` (whose reductions then scale the
    scheduled rate, and are kept in the optimizer's learning-rate variable,
    which checkpoints carry).

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
            (ours or Keras'), a function of the update count. Its values are
            absolute: the optimizer's own rate is not used.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.

    Examples:
        >>> from keras_trainkit import schedules, callbacks
        >>> cb = callbacks.LearningRateSchedule(
        ...     schedules.JoinSchedules([schedules.WarmUp(1e-3, 100), 1e-3], [100]))
        >>> # model.fit(x, y, callbacks=[cb])
    """

    _lr_role = "decay"
    #: Whether the schedule's base is the optimizer's own rate (read in the step).
    relative = False

    def __init__(self, schedule: Any = None, log_dir: str | None = None, verbose: int = 0):
        super().__init__()
        if type(self) is LearningRateSchedule:
            self.schedule = check_schedule("schedule", schedule)
        self.log_dir = log_dir
        self.verbose = v.integer("verbose", verbose, low=0)

    def _trace_key(self, session):
        # What the step holds is the controllers' schedule (their own keys).
        return ("learning_rate", self._lr_role)

    # What the controller asks for.
    def _build_schedule(self, optimizer) -> Any:
        """The schedule this callback drives `optimizer` with (host values)."""
        return self.schedule

    # -- hooks --------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        Session.begin(self)

    def _leads(self) -> bool:
        """Whether this callback does the per-epoch work of the fit's LR controllers."""
        session = Session.of(self.model)
        return session is not None and session.lr_plan is not None and session.lr_plan.participants[0] is self

    def on_epoch_begin(self, epoch, logs=None):
        if self._leads():
            for controller in _lr_control.controllers(self.model):
                controller.start_epoch()

    def on_epoch_end(self, epoch, logs=None):
        found = _lr_control.controllers(self.model)
        for controller in found:
            controller.write_summaries()
        if logs is not None and found:
            logs.update(_lr_control.rate_logs(self.model))
        if self.verbose and found:
            rates = ", ".join(f"{float(ops.convert_to_numpy(c())):.6g}" for c in found)
            print(f"\nEpoch {epoch + 1}: learning rate for the next update: {rates}")

    def on_train_end(self, logs=None):
        for controller in _lr_control.controllers(self.model):
            controller.write_summaries()


class _DecayCallback(LearningRateSchedule):
    """Builds `schedule_class(initial_learning_rate=base, **arguments)`."""

    schedule_class: type = schedules.Schedule
    _arguments: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(type(self)).bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        initial = values.pop("initial_learning_rate")
        super().__init__(log_dir=values.pop("log_dir"), verbose=values.pop("verbose"))
        if initial is not None:
            v.positive("initial_learning_rate", initial)
        self.initial_learning_rate = initial
        self._kwargs = values
        for key, value in values.items():
            setattr(self, key, value)
        # Validate everything now, with a stand-in base rate when it is unknown.
        self.schedule_class(initial_learning_rate=initial or 1.0, **values)

    @property
    def relative(self) -> bool:
        """`initial_learning_rate=None`: the base is the optimizer's own rate."""
        return self.initial_learning_rate is None

    def _build_schedule(self, optimizer):
        base = self.initial_learning_rate
        if base is None:
            # The optimizer's own rate (its float, or its compiled schedule's
            # value at step 0); each sub-optimizer of a MultiOptimizer keeps
            # its own. With a float rate the controller reads it in the step.
            base = _lr_control.rate_at_zero(_lr_control.own_rate(optimizer))
        return self.schedule_class(initial_learning_rate=base, **self._kwargs)


_COMMON_ARGS = """
        initial_learning_rate: Rate at update 0, a float > 0, or `None` for the
            optimizer's own rate, read inside the train step (so that
            `ReduceLROnPlateau` and checkpoints rescale and carry it); each
            sub-optimizer of a `MultiOptimizer` keeps its own. Defaults to `None`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.
"""


def _decay_callback(name: str, schedule_class: type, summary: str, args_doc: str,
                    exclude: tuple[str, ...] = ()) -> type:
    """A decay callback class applying `schedule_class` (see `_DecayCallback`)."""
    skipped = {"initial_learning_rate", "name", *exclude}
    params = [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
              for p in inspect.signature(schedule_class).parameters.values() if p.name not in skipped]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d, annotation=a)
               for n, d, a in (("initial_learning_rate", None, "float | None"),
                               ("log_dir", None, "str | None"), ("verbose", 0, "int"))]
    doc = (f"{summary}\n\n    Applies `keras_trainkit.schedules.{schedule_class.__name__}` per optimizer "
           "update, inside\n    the compiled train step; see `LearningRateSchedule` for logs, "
           f"TensorBoard and\n    `ReduceLROnPlateau`.\n\n    Args:\n{args_doc.rstrip()}{_COMMON_ARGS}")
    cls = type(name, (_DecayCallback,), {
        "__doc__": doc, "__module__": __name__, "__qualname__": name,
        "schedule_class": schedule_class, "__signature__": inspect.Signature(params)})
    return cls


StepDecay = _decay_callback("StepDecay", schedules.StepDecay, """Multiplies the rate by `gamma` every `step_size` updates, or at milestones.

    ```
    lr(t) = lr0 * gamma ** floor(t / step_size)
    lr(t) = lr0 * gamma ** #{m in milestones : m <= t}
    ```""", """        step_size: Updates between decays, an int >= 1 (or give `milestones`).
            Defaults to `None`.
        gamma: Decay factor, in (0, 1]. Defaults to `0.1`.
        milestones: Strictly increasing update counts at which the rate is
            multiplied by `gamma`. Defaults to `None`.""")

ExponentialDecay = _decay_callback("ExponentialDecay", schedules.ExponentialDecay, """Decays the rate exponentially.

    ```
    lr(t) = lr0 * decay_rate ** (t / decay_steps)      (floor(t / decay_steps) if staircase)
    ```""", """        decay_steps: Updates per factor of `decay_rate`, a number > 0.
        decay_rate: Decay factor, in (0, 1].
        staircase: Decay in discrete steps. Defaults to `False`.""")

PolynomialDecay = _decay_callback("PolynomialDecay", schedules.PolynomialDecay, """Decays the rate polynomially to `end_learning_rate`.

    ```
    lr(t) = (lr0 - end_learning_rate) * (1 - min(t, T) / T) ** power + end_learning_rate
    ```""", """        decay_steps: `T`, the length of the decay in updates, a number > 0.
        end_learning_rate: The final rate (absolute), a float >= 0.
            Defaults to `0.0001`.
        power: The exponent, a float > 0 (1 is linear). Defaults to `1.0`.
        cycle: Restart the decay every `T` updates (with `T` growing) instead
            of holding the final rate. Defaults to `False`.""")

InverseTimeDecay = _decay_callback("InverseTimeDecay", schedules.InverseTimeDecay, """Decays the rate as the inverse of time.

    ```
    lr(t) = lr0 / (1 + decay_rate * t / decay_steps)   (floor(t / decay_steps) if staircase)
    ```""", """        decay_steps: Time scale of the decay in updates, a number > 0.
        decay_rate: Decay rate, a float >= 0.
        staircase: Decay in discrete steps. Defaults to `False`.""")

CosineDecay = _decay_callback("CosineDecay", schedules.CosineDecay, """Decays the rate along a cosine to a floor, optionally with warm restarts (SGDR).

    ```
    lr(t) = lr0 * ((1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2 + alpha)
    ```

    With `restarts=True` cycle `i` lasts `T * t_mul**i` updates and starts at
    `lr0 * m_mul**i` (Loshchilov & Hutter, 2017). For a warm-up, add a
    `WarmUp` callback.""", """        decay_steps: `T`, the length of the (first) decay in updates, a number > 0.
        alpha: Floor as a fraction of `lr0`, in [0, 1]. Defaults to `0.0`.
        restarts: Restart the cosine every cycle. Defaults to `False`.
        t_mul: Cycle-length multiplier, >= 1. Defaults to `2.0`.
        m_mul: Cycle-peak multiplier, in [0, 1]. Defaults to `1.0`.""",
                              exclude=("warmup_target", "warmup_steps"))


class WarmUp(LearningRateSchedule):
    """Warms up whatever drives the optimizer, applying `schedules.WarmUp`.

    It wraps the decay callback in the same `fit()` if there is one, else the
    optimizer's own rate (a float or a schedule it was compiled with). With the
    default `offset=True` the wrapped schedule starts at its own step 0 once
    the warm-up ends (its `decay_steps` count updates after the warm-up).

    ```
    lr(t) = initial_learning_rate + (peak - initial_learning_rate) * t / warmup_steps   (t < warmup_steps)
    lr(t) = wrapped(t - warmup_steps)                                                    (after)
    ```

    (`shape="cosine"` or `"exponential"` change the ramp.)

    Args:
        warmup_steps: Ramp length in optimizer updates, an int >= 0.
        initial_learning_rate: Rate at update 0 (absolute). Defaults to `0.0`.
        shape: `"linear"`, `"exponential"` or `"cosine"`. Defaults to `"linear"`.
        offset: Start the wrapped schedule at its step 0 after the ramp.
            Defaults to `True`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.

    Examples:
        >>> model.fit(x, y, epochs=20, callbacks=[WarmUp(warmup_steps=500),
        ...                                       CosineDecay(decay_steps=10_000)])
    """

    _lr_role = "warmup"

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

    def _wrap(self, inner: Any) -> Any:
        """`schedules.WarmUp(inner, ...)`."""
        return schedules.WarmUp(inner, **self._kwargs)


class OneCycle(LearningRateSchedule):
    """The one-cycle policy: learning rate and momentum, as PyTorch's `OneCycleLR`.

    Drives the optimizer's rate with `schedules.OneCycle` and, with
    `cycle_momentum=True`, its momentum (SGD's and RMSprop's `momentum`, the
    Adam family's `beta_1`) with `schedules.OneCycleMomentum`, both inside the
    compiled train step and keyed on the optimizer's update count (so a second
    `fit()` continues and a resumed run is exact). Per update they equal
    torch's `OneCycleLR` (tested against torch's trajectories). With
    `T = total_steps`, `initial = max_learning_rate / div_factor` and
    `min = initial / final_div_factor`::

        rate:      initial -> max_learning_rate (first pct_start * T updates) -> min
        momentum:  max_momentum -> base_momentum -> max_momentum

    (cosine or linear within each phase; `three_phase=True` adds a phase back
    to `initial` before the final decay, as in fastai's original policy). It
    composes with the other callbacks as the decay callbacks do: a `WarmUp`
    wraps it, `ReduceLROnPlateau` rescales it, `BatchSizeScheduler` multiplies
    it. After the cycle both hold their last values.

    Logs: `learning_rate` and `momentum` (or `beta_1`) of the epoch's last
    update go into the epoch logs; with `log_dir` or a TensorBoard callback in
    the same `fit()`, both are written per update.

    Args:
        max_learning_rate: Peak rate, a float > 0, or `None` for the
            optimizer's own rate (then read inside the step, so that
            checkpoints carry any rescaling, as for the decay callbacks).
        total_steps: Updates in the cycle, an int >= 1. Give this, or
            `epochs` and `steps_per_epoch`, or neither: then the cycle spans
            the `fit()` (`epochs` times its steps per epoch). Defaults to `None`.
        epochs: Epochs in the cycle (with `steps_per_epoch`). Defaults to `None`.
        steps_per_epoch: Updates per epoch (with `epochs`). Defaults to `None`.
        pct_start: Fraction of the cycle spent raising the rate, in [0, 1].
            Defaults to `0.3`.
        anneal_strategy: `"cos"` or `"linear"`. Defaults to `"cos"`.
        div_factor: `initial = max_learning_rate / div_factor`, > 0.
            Defaults to `25.0`.
        final_div_factor: `min = initial / final_div_factor`, > 0.
            Defaults to `1e4`.
        three_phase: Use three phases. Defaults to `False`.
        cycle_momentum: Cycle the momentum too (the optimizer must have one:
            SGD or RMSprop built with `momentum > 0`, or `beta_1`).
            Defaults to `True`.
        base_momentum: Momentum at the rate's peak, in [0, 1). Defaults to `0.85`.
        max_momentum: Momentum at the start and the end, in [0, 1).
            Defaults to `0.95`.
        log_dir: TensorBoard log directory, or `None`. Defaults to `None`.
        verbose: 1 prints the rate at each epoch end. Defaults to `0`.

    References:
        Smith & Topin, 2017. Super-Convergence: Very Fast Training of Neural
        Networks Using Large Learning Rates. https://arxiv.org/abs/1708.07120

    Examples:
        >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
        >>> model.fit(x, y, epochs=10, callbacks=[OneCycle(0.5)])  # the cycle spans the fit
    """

    _runtime_attributes = ("_total", "_momentum_written", "_momentum_writer")

    def __init__(self, max_learning_rate: float | None, total_steps: int | None = None,
                 epochs: int | None = None, steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: bool = False, cycle_momentum: bool = True, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, log_dir: str | None = None, verbose: int = 0):
        super().__init__(log_dir=log_dir, verbose=verbose)
        self.max_learning_rate = max_learning_rate
        self.total_steps, self.epochs, self.steps_per_epoch = total_steps, epochs, steps_per_epoch
        self.cycle_momentum = v.boolean("cycle_momentum", cycle_momentum)
        self._phases = dict(pct_start=pct_start, anneal_strategy=anneal_strategy, three_phase=three_phase)
        self._rates = dict(div_factor=div_factor, final_div_factor=final_div_factor)
        self._momenta = dict(base_momentum=base_momentum, max_momentum=max_momentum)
        self.pct_start, self.anneal_strategy, self.three_phase = pct_start, anneal_strategy, three_phase
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        self.base_momentum, self.max_momentum = base_momentum, max_momentum
        # Validate everything now (a stand-in cycle length when the fit gives it).
        given = (total_steps, epochs, steps_per_epoch)
        self._total = None
        self._schedules(1.0 if max_learning_rate is None else max_learning_rate,
                        given if any(x is not None for x in given) else (1, None, None))
        self._momentum_writer = None

    @property
    def relative(self) -> bool:
        """`max_learning_rate=None`: the peak is the optimizer's own rate."""
        return self.max_learning_rate is None

    def _schedules(self, peak: float, lengths: tuple[Any, Any, Any]):
        total, epochs, steps = lengths
        rate = schedules.OneCycle(peak, total_steps=total, epochs=epochs, steps_per_epoch=steps,
                                  **self._phases, **self._rates)
        return rate, rate.momentum_schedule(**self._momenta)

    def _lengths(self) -> tuple[Any, Any, Any]:
        if self._total is not None:
            return (self._total, None, None)
        return (self.total_steps, self.epochs, self.steps_per_epoch)

    def _check(self, session):
        self._total = None
        if all(x is None for x in (self.total_steps, self.epochs, self.steps_per_epoch)):
            params = self.params or {}
            steps, epochs = params.get("steps"), params.get("epochs")
            accumulating = any(getattr(o, "gradient_accumulation_steps", None)
                               for o in _lr_control.target_optimizers(self.model))
            if steps is None or not epochs or accumulating:
                raise ValueError(
                    "OneCycle needs `total_steps` (or `epochs` and `steps_per_epoch`) when fit() "
                    "cannot tell its number of updates (data of unknown length, or gradient "
                    f"accumulation). Received: total_steps=None; fit() has steps={steps!r}, "
                    f"epochs={epochs!r}")
            self._total = int(epochs) * int(steps)
        if self.cycle_momentum:
            for optimizer in _lr_control.target_optimizers(self.model):
                _momentum_attribute(optimizer)

    def _build_schedule(self, optimizer):
        peak = self.max_learning_rate
        if peak is None:
            peak = _lr_control.rate_at_zero(_lr_control.own_rate(optimizer))
        return self._schedules(peak, self._lengths())[0]

    def _trace_key(self, session):
        # The momentum schedule is traced as a value of its own: compiled anew.
        return None if self.cycle_momentum else super()._trace_key(session)

    def _attach(self, session):
        if not self.cycle_momentum:
            return
        momentum = self._schedules(1.0, self._lengths())[1]
        for optimizer in _lr_control.target_optimizers(self.model):
            name = _momentum_attribute(optimizer)
            original = getattr(optimizer, name)
            if keras.backend.backend() == "torch":
                # Eager steps, and Keras' torch optimizers hand the value to
                # torch._foreach_* ops: a plain float, set before every step.
                def value(_, optimizer=optimizer):
                    return float(momentum(int(ops.convert_to_numpy(optimizer.iterations))))

                session.patch_per_call(optimizer, name, value, each_call=True)
                continue
            setattr(optimizer, name, _lr_control.StepValue(float(original), momentum, optimizer))

            def undo(optimizer=optimizer, name=name, original=original):
                setattr(optimizer, name, original)

            session.on_undo(undo)
        self._momentum_schedule = momentum
        self._momentum_written = None
        self._momentum_writer = _summaries.ScalarWriter(_summaries.tensorboard_dirs(session, self.log_dir))
        session.on_undo(self._momentum_writer.close)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.cycle_momentum and self._momentum_written is None:
            self._momentum_written = self._update_count()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if not self.cycle_momentum or Session.of(self.model) is None:
            return
        done = self._update_count()
        name = _momentum_attribute(_lr_control.target_optimizers(self.model)[0])
        if logs is not None:
            logs[name] = float(self._momentum_schedule(max(done - 1, 0)))
        self._write_momentum(name, done)

    def on_train_end(self, logs=None):
        super().on_train_end(logs)
        if self.cycle_momentum and Session.of(self.model) is not None:
            name = _momentum_attribute(_lr_control.target_optimizers(self.model)[0])
            self._write_momentum(name, self._update_count())

    def _write_momentum(self, name: str, done: int) -> None:
        start = self._momentum_written
        if self._momentum_writer is None or not self._momentum_writer.dirs or start is None or done <= start:
            return
        updates = np.arange(start, done)
        self._momentum_writer.write({name: (updates + 1, self._momentum_schedule(updates))})
        self._momentum_written = done

    def _update_count(self) -> int:
        return int(ops.convert_to_numpy(_lr_control.target_optimizers(self.model)[0].iterations))


def _momentum_attribute(optimizer) -> str:
    """`"momentum"` (SGD, RMSprop, LARS) or `"beta_1"` (the Adam family), as torch
    cycles `momentum` or `betas[0]`; raises for an optimizer without one."""
    for name in ("momentum", "beta_1"):
        value = getattr(optimizer, name, None)
        if isinstance(value, (int, float, _lr_control.StepValue)) and not isinstance(value, bool):
            if name == "momentum" and float(value) == 0.0:
                raise ValueError(
                    f"OneCycle(cycle_momentum=True) needs a momentum to cycle, but optimizer "
                    f"{optimizer.name!r} has momentum=0 (Keras then keeps no momentum state). Build it "
                    "with momentum > 0, or pass cycle_momentum=False. Received: momentum=0")
            return name
    raise ValueError(
        f"OneCycle(cycle_momentum=True) needs an optimizer with a `momentum` or `beta_1`; "
        f"{type(optimizer).__name__} {optimizer.name!r} has neither. Pass cycle_momentum=False.")
