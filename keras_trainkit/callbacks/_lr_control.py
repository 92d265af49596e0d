"""The per-optimizer rate controller behind the learning-rate callbacks.

While a `fit()` has keras_trainkit learning-rate participants (the LR
callbacks, and `BatchSizeScheduler` when it scales the rate), each optimizer
that applies updates gets a `RateController` as its learning rate (Keras
evaluates it inside the compiled step, at every update):

    rate(t) = schedule_b(t) * f                         (relative schedules)
    rate(t) = schedule(t) * (b / b_0) * f               (absolute schedules)

with `t = optimizer.iterations` and:

- `b`, the optimizer's **own learning-rate variable**, read in the step. A
  relative schedule (a decay callback with `initial_learning_rate=None`, the
  default, or a `WarmUp` of the optimizer's own float rate) uses `b` as its
  base rate (`Schedule.with_base`). Anything that sets
  `optimizer.learning_rate` during the fit (`ReduceLROnPlateau`, the user)
  rescales `b` by the ratio of the value set to the current rate. `b` is
  Keras' own variable, so everything Keras saves carries the rescaling:
  BackupAndRestore, ModelCheckpoint, `model.save`/`load_model`, and a plain
  `fit()` afterwards trains at the rescaled rate, as in plain Keras.
- For an absolute schedule (`callbacks.LearningRateSchedule(schedule)`, an
  explicit `initial_learning_rate`, or an optimizer compiled with a schedule)
  the rescaling is `b / b_0`, where `b_0` is the optimizer's rate before
  anything rescaled it in this process (remembered when the callbacks first
  meet the optimizer, before BackupAndRestore restores a checkpoint). An
  optimizer compiled with a schedule has no `b`: setting its rate raises, as
  in Keras.
- `f`, the batch-size factor of `BatchSizeScheduler`: a function of the
  epoch, set at each epoch start (so a resumed run sets it again).

The optimizer's own variables are never replaced or untracked, so
checkpoints hold the same variables with or without the callbacks. The
controller is installed by the fit's `Session` and removed when it ends,
however it ends.
"""

from __future__ import annotations

import numbers
import weakref
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit import schedules
from keras_trainkit.callbacks import _eager, _summaries
from keras_trainkit.schedules._base import (
    call_schedule,
    deserialize_schedule,
    serialize_schedule,
)

LR = keras.optimizers.schedules.LearningRateSchedule

# torch: updates covered by a controller's device table of rates.
_TABLE_LENGTH = 1024

# Each optimizer's own rate before anything rescaled it, in this process (b_0).
_REFERENCE_RATES: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def check_backend() -> None:
    backend = keras.backend.backend()
    if backend not in ("tensorflow", "torch", "jax"):
        raise RuntimeError(
            "keras_trainkit's learning-rate callbacks run on the tensorflow, jax and torch "
            f"backends. Current backend: {backend!r}.")


def target_optimizers(model: keras.Model) -> list[keras.optimizers.Optimizer]:
    """The optimizers that apply updates (wrappers unwrapped, MultiOptimizer expanded)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("The model must be compiled with an optimizer before fit().")
    return hooks.inner_optimizers(optimizer)


def remember_reference_rates(model: Any) -> None:
    """Records each optimizer's own rate the first time our callbacks meet it."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return
    for inner in hooks.inner_optimizers(optimizer):
        slot = hooks.learning_rate_slot(inner)
        if isinstance(slot, keras.Variable) and inner not in _REFERENCE_RATES:
            _REFERENCE_RATES[inner] = float(ops.convert_to_numpy(slot))


def rate_at_zero(rate: Any) -> float:
    """The optimizer's own rate at update 0, as a float."""
    if isinstance(rate, keras.Variable):
        return float(ops.convert_to_numpy(rate))
    if isinstance(rate, LR):
        return float(ops.convert_to_numpy(rate(ops.convert_to_tensor(0))))
    if isinstance(rate, numbers.Real):
        return float(rate)
    raise ValueError(
        "keras_trainkit's learning-rate callbacks need an optimizer compiled with a "
        f"float or a LearningRateSchedule learning rate. Received: learning_rate={rate!r}")


def own_rate(optimizer: keras.optimizers.Optimizer) -> Any:
    """The optimizer's learning rate as Keras holds it (not our controller)."""
    slot = hooks.learning_rate_slot(optimizer)
    return slot.original if isinstance(slot, RateController) else slot


class Plan:
    """The learning-rate participants of one fit, validated."""

    def __init__(self, participants: list[Any], decay: Any, warmup: Any, factor: Any):
        self.participants = participants
        self.decay, self.warmup, self.factor = decay, warmup, factor


def plan(session: Any) -> Plan | None:
    """Validates the fit's learning-rate participants; changes nothing."""
    participants = [p for p in session.participants if getattr(p, "_lr_role", None)]
    if not participants:
        return None
    check_backend()
    optimizers = target_optimizers(session.model)
    roles: dict[str, list[Any]] = {"decay": [], "warmup": [], "factor": []}
    for p in participants:
        roles[p._lr_role].append(p)
    for role, cbs in roles.items():
        if len(cbs) > 1:
            names = ", ".join(type(c).__name__ for c in cbs)
            what = "batch-size rate factor" if role == "factor" else f"{role} learning-rate callback"
            raise ValueError(
                f"At most one {what} can drive an optimizer; received {len(cbs)} for optimizer "
                f"{optimizers[0].name!r}: {names}. Compose the schedule with keras_trainkit.schedules "
                "(e.g. JoinSchedules) and pass it to callbacks.LearningRateSchedule instead.")
    result = Plan(participants, *(cbs[0] if cbs else None for cbs in roles.values()))
    for optimizer in optimizers:
        slot = hooks.learning_rate_slot(optimizer)
        own = rate_at_zero(slot)  # validates the kind of learning rate
        if result.decay is not None:
            inner = result.decay._build_schedule(optimizer)
        else:
            inner = own if isinstance(slot, keras.Variable) else slot
        if result.warmup is not None:
            result.warmup._wrap(inner)
    return result


def install(session: Any) -> None:
    """Installs a controller on each optimizer (at attach), with its undo."""
    lr_plan = session.lr_plan
    if lr_plan is None:
        return
    dirs = []
    for p in lr_plan.participants:
        dirs += _summaries.tensorboard_dirs(session, getattr(p, "log_dir", None))
    for optimizer in target_optimizers(session.model):
        controller = RateController(session, optimizer, lr_plan)
        controller.summaries.add_dirs(dict.fromkeys(dirs))
        hooks.set_learning_rate_slot(optimizer, controller)
        session.controllers.append(controller)

        def undo(optimizer=optimizer, controller=controller):
            controller.close()
            if hooks.learning_rate_slot(optimizer) is controller:
                hooks.set_learning_rate_slot(optimizer, controller.original)

        session.on_undo(undo)


def controllers(model: Any) -> list[RateController]:
    """The controllers of `model`'s running fit (empty when none)."""
    from keras_trainkit.callbacks._session import current_session

    session = current_session(model)
    return list(session.controllers) if session is not None else []


def rate_logs(model: Any) -> dict[str, float]:
    """`learning_rate` (`learning_rate_<name>` per optimizer of a
    MultiOptimizer): the rate used by the last update, for the epoch logs."""
    found = controllers(model)
    if len(found) == 1:
        return {"learning_rate": found[0].last_rate()}
    return {f"learning_rate_{c.optimizer.name}": c.last_rate() for c in found}


@keras.saving.register_keras_serializable(package="keras_trainkit")
class RateController:
    """Stands in for an optimizer's learning rate while a fit has LR callbacks."""

    def __init__(self, session: Any = None, optimizer: Any = None, lr_plan: Plan | None = None):
        self.session = session
        self.optimizer = optimizer
        if optimizer is None:  # from_config of a bare controller: never used as such
            return
        self.original = hooks.learning_rate_slot(optimizer)
        self.variable = self.original if isinstance(self.original, keras.Variable) else None
        decay, warmup = lr_plan.decay, lr_plan.warmup
        self.relative = self.variable is not None and (decay is None or decay.relative)
        # The composed schedule with host values; a relative one is rebased on
        # the optimizer's rate variable in the step (`Schedule.with_base`).
        if decay is not None:
            schedule = decay._build_schedule(optimizer)
        elif self.relative:
            schedule = schedules.Constant(rate_at_zero(self.variable))
        else:
            schedule = self.original
        self.schedule = schedule if warmup is None else warmup._wrap(schedule)
        self.reference = None  # b_0 (absolute schedules with a rate variable)
        if self.variable is not None and not self.relative:
            self.reference = _REFERENCE_RATES.get(optimizer, float(ops.convert_to_numpy(self.variable))) or None
        self.factor = None
        if lr_plan.factor is not None:
            with _strategy_scope(session.model):
                self.factor = keras.Variable(1.0, dtype="float32", trainable=False,
                                             name="batch_size_rate_factor", aggregation="only_first_replica")
        # Host-side record of (first update, b, f) for logs and TensorBoard:
        # derived from what the step reads, never read by the step.
        self.changes: list[tuple[int, float, float]] = [(self._update_count(), self._base_value(), 1.0)]
        self._version = 0  # bumped at every change, for the cache
        self.summaries = _summaries.ScalarWriter()
        self._host_fn: Any = None
        self._cache: tuple[int, int, np.ndarray] | None = None  # (version, first update, rates)
        self._written: int | None = None
        # torch: (key, first update, train calls, rates on the device and on the host, counter version)
        self._table: tuple | None = None

    # -- the schedule ------------------------------------------------------------------
    def schedule_with(self, base: Any) -> Any:
        """The schedule in effect when the optimizer's own rate is `base`."""
        return self.schedule.with_base(base) if self.relative else self.schedule

    def rate_of(self, steps: Any, base: Any, factor: Any) -> Any:
        """Rates at float32 `steps` given `b` and `f` (tensors): the one formula
        used in the step and, compiled, on the host."""
        return _rate_formula(self.schedule, self.relative, self.reference, steps, base,
                             factor if self.factor is not None else None)

    def rate_at(self, step: Any) -> Any:
        base = ops.cast(self.variable, "float32") if self.variable is not None else None
        factor = ops.cast(self.factor, "float32") if self.factor is not None else None
        return self.rate_of(ops.cast(step, "float32"), base, factor)

    def trace_key(self) -> Any:
        """What the compiled step holds of this controller: the schedule's
        serialized config and constants, and the optimizer variable it reads;
        `None` (compile anew) with a batch-size factor, a variable of this fit
        that the step holds, or a schedule that does not serialize."""
        import json

        if self.factor is not None:
            return None
        config = _schedule_config(self)
        if config is None:
            return None
        return (id(self.optimizer), json.dumps(config, sort_keys=True), self.relative, self.reference,
                id(self.variable) if self.variable is not None else None)

    # -- what Keras' optimizer calls ------------------------------------------------
    def __call__(self):
        if _in_traced_step():  # TensorFlow, tracing the step
            return self.rate_at(self.optimizer.iterations)
        session = self.session
        backend = keras.backend.backend()
        if backend != "tensorflow" and session is not None and session.in_train_step:
            if backend == "torch":
                return self._torch_rate()
            return self.rate_at(self.optimizer.iterations)  # JAX: traced (or run eagerly)
        if not session._active_calls and not session.alive():  # left by a fit that failed: heal
            session.abort()
            return self.optimizer.learning_rate
        # Eager read (`optimizer.learning_rate`, e.g. by ReduceLROnPlateau or
        # keras.callbacks.TensorBoard at an epoch end, or a TensorFlow step
        # run eagerly): the next update's rate, from the cached host
        # evaluation, not a few ms of eager ops.
        return ops.convert_to_tensor(self.rate_of_update(self._update_count()))

    def _torch_rate(self) -> Any:
        """torch: the coming update's rate, read from a table of the rates of
        the next updates, computed by the same formula as `rate_at` (a
        `keras.ops` evaluation is 30-odd eager operations a step). On the CPU
        the table is indexed by the update count read on the host; on an
        accelerator by one `take` on the device (no host sync). The table is
        rebuilt when the optimizer's rate or the batch-size factor changed (the
        torch tensors' version counters, bumped by every in-place assign) and
        before it could run out (each train-function call applies at most one
        update on torch)."""
        import torch

        if torch.compiler.is_compiling():  # traced by torch.compile (jit_compile=True)
            return self.rate_at(self.optimizer.iterations)
        key = (self._version, _tensor_version(self.variable), _tensor_version(self.factor))
        iterations = _eager.tensor(self.optimizer.iterations)
        table = self._table
        if _eager.reads_on_host(iterations):  # the CPU: index on the host
            index = int(iterations) - table[1] if table is not None else -1
            if table is None or table[0] != key or not 0 <= index < len(table[3]):
                table = self._build_table(key)
                index = int(iterations) - table[1]
            return table[3][index]
        # On the device the count is not read: the table is stale when it may
        # run out, or when the counter moved by more than one increment per
        # train call since it was built (something assigned it: a restore).
        calls = self.session.train_calls - table[2] if table is not None else 0
        counter = _tensor_version(hooks.raw_iterations(self.optimizer))
        if (table is None or table[0] != key or calls + 1 >= len(table[3]) or counter[0] != table[5][0]
                or counter[1] - table[5][1] > calls):
            table = self._build_table(key)
        return torch.take(table[3], (iterations - table[1]).to(torch.int64))

    def _table_rates(self, updates: np.ndarray) -> np.ndarray | None:
        """torch: the rates of `updates` from the step's table, when it holds
        them all with the current rate and factor (else None)."""
        table = self._table
        if table is None or not len(updates):
            return None
        start, values = table[1], table[4]
        if updates.min() < start or updates.max() >= start + len(values):
            return None
        if table[0] != (self._version, _tensor_version(self.variable), _tensor_version(self.factor)):
            return None
        return values[updates - start]

    def _build_table(self, key: tuple) -> tuple:
        import torch

        start = self._update_count()
        factor = float(ops.convert_to_numpy(self.factor)) if self.factor is not None else 1.0
        steps = np.arange(start, start + _TABLE_LENGTH, dtype="float32")
        values = self._evaluate(steps, self._base_value(), factor)
        device = ops.convert_to_tensor(self.optimizer.iterations).device
        self._table = (key, start, self.session.train_calls, torch.as_tensor(values, device=device), values,
                       _tensor_version(hooks.raw_iterations(self.optimizer)))
        return self._table

    def assign(self, value):
        """`optimizer.learning_rate = value` rescales the optimizer's own rate."""
        if not self.session.alive():
            self.session.abort()
            self.optimizer.learning_rate = value
            return
        value = float(ops.convert_to_numpy(value))
        current = float(self.rate_of_update(self._update_count()))
        if current == value:
            return
        if self.variable is None or (not self.relative and self.reference is None):
            raise TypeError(
                f"Optimizer {self.optimizer.name!r} was compiled with a LearningRateSchedule (or a "
                "rate of 0), so it has no learning-rate variable to hold a rescaling (Keras refuses "
                "to set a scheduled rate too). Compile with a float learning rate and drive the "
                "schedule with "
                "keras_trainkit.callbacks.LearningRateSchedule(schedule). "
                f"Received: learning_rate={value!r}")
        if current == 0.0:
            raise ValueError(
                "Cannot set the learning rate while the keras_trainkit schedule gives 0 at "
                f"update {self._update_count()}: a scheduled rate is changed by rescaling it. "
                f"Received: learning_rate={value!r}")
        self.variable.assign(self._base_value() * value / current)
        self._record()

    # -- host side ---------------------------------------------------------------------
    def _update_count(self) -> int:
        return int(ops.convert_to_numpy(self.optimizer.iterations))

    def _base_value(self) -> float:
        return float(ops.convert_to_numpy(self.variable)) if self.variable is not None else 0.0

    def set_factor(self, factor: float) -> None:
        """Sets `f` (BatchSizeScheduler, at an epoch start)."""
        if self.factor is not None and float(ops.convert_to_numpy(self.factor)) != factor:
            self.factor.assign(factor)
            self._record()
            if keras.backend.backend() == "jax":
                # Not a variable of the step's state on JAX: the compiled step
                # holds its value, so compile it again with the new one.
                self.session.retrace()

    def _record(self) -> None:
        factor = float(ops.convert_to_numpy(self.factor)) if self.factor is not None else 1.0
        entry = (self._update_count(), self._base_value(), factor)
        if entry[1:] != self.changes[-1][1:]:
            if self.changes[-1][0] == entry[0]:
                self.changes[-1] = entry
            else:
                self.changes.append(entry)
            self._version += 1

    def last_rate(self) -> float:
        """The rate used by the last update applied (for epoch logs)."""
        return float(self.rate_of_update(max(self._update_count() - 1, 0)))

    def rate_of_update(self, update: int) -> np.float32:
        """The rate update number `update` uses, cached: each epoch end evaluates
        the schedule once (a compiled call) for its TensorBoard rates, the epoch
        logs and Keras' TensorBoard and ReduceLROnPlateau (which read
        `optimizer.learning_rate`, the next update's rate)."""
        table = self._table_rates(np.array([update]))
        if table is not None:
            return table[0]
        cached = self._cache
        if not (cached is not None and cached[0] == self._version
                and cached[1] <= update < cached[1] + len(cached[2])):
            self.rates_on_host(np.arange(update, update + 2))
            cached = self._cache
        return cached[2][update - cached[1]]

    def rates_on_host(self, updates: np.ndarray) -> np.ndarray:
        """float32 rates used by the given update numbers, as the step computes them."""
        table = self._table_rates(updates)
        if table is not None:
            return table
        starts = np.array([c[0] for c in self.changes])
        which = np.searchsorted(starts, updates, side="right") - 1
        values = np.empty(len(updates), "float32")
        for i in np.unique(which):
            _, base, factor = self.changes[max(int(i), 0)]
            mask = which == i
            values[mask] = self._evaluate(updates[mask].astype("float32"), base, factor)
        if len(updates) and np.array_equal(updates, np.arange(updates[0], updates[0] + len(updates))):
            self._cache = (self._version, int(updates[0]), values)
        return values

    def _evaluate(self, steps: np.ndarray, base: float, factor: float) -> np.ndarray:
        """`rate_of` on the host, compiled on TensorFlow and JAX (a fraction of
        a millisecond a call against a few ms of eager operations); eager
        `torch` operations on torch."""
        backend = keras.backend.backend()
        if backend == "jax":
            if self._host_fn is None:
                self._host_fn = _host_function(self)
            # Padded to a power of two: a few compiled shapes serve every call.
            n = len(steps)
            padded = np.zeros(max(8, 1 << max(n - 1, 0).bit_length()), "float32")
            padded[:n] = steps
            result = self._host_fn(padded, np.float32(base), np.float32(factor))
            return np.asarray(result, "float32")[:n]
        if backend != "tensorflow":
            result = self.rate_of(ops.convert_to_tensor(steps), ops.convert_to_tensor(np.float32(base)),
                                  ops.convert_to_tensor(np.float32(factor)))
            return np.asarray(ops.convert_to_numpy(result), "float32")
        import tensorflow as tf

        if self._host_fn is None:
            self._host_fn = _host_function(self)
        return self._host_fn(tf.constant(steps), tf.constant(base, tf.float32),
                             tf.constant(factor, tf.float32)).numpy()

    # -- epochs and TensorBoard ---------------------------------------------------------
    def start_epoch(self) -> None:
        self._record()  # e.g. restored by BackupAndRestore, or set outside the fit
        if self._written is None:
            self._written = self._update_count()

    def write_summaries(self, tag: str = "learning_rate") -> None:
        """Writes the rate of every update since the last call, one scalar per step.

        Step `n` holds the rate used by the n-th update (n >= 1), which is where
        keras.callbacks.TensorBoard puts that batch's loss.
        """
        if not self.summaries.dirs or self._written is None:
            return
        done = self._update_count()
        if done <= self._written:
            return
        # One more than written: the next update's rate, cached for the reads
        # of optimizer.learning_rate at this epoch end.
        updates = np.arange(self._written, done + 1)
        self.summaries.write({tag: (updates[:-1] + 1, self.rates_on_host(updates)[:-1])})
        self._written = done

    def close(self) -> None:
        self.summaries.close()

    # -- saving mid-training (ModelCheckpoint) ------------------------------------------
    def get_config(self):
        original = self.original
        if isinstance(original, keras.Variable):
            original = float(ops.convert_to_numpy(original))
        return {"original": serialize_schedule(original)}

    @classmethod
    def from_config(cls, config):
        """Loads as the optimizer's own rate (with any rescaling): the schedule
        lives in the callbacks."""
        original = config["original"]
        if isinstance(original, dict):
            return keras.saving.deserialize_keras_object(original)
        return original


@keras.saving.register_keras_serializable(package="keras_trainkit")
class StepValue:
    """A hyperparameter (a momentum) following a schedule of the update count.

    Put in place of an optimizer's float hyperparameter (SGD's `momentum`, the
    Adam family's `beta_1`) for a fit. Where the optimizer's update turns it
    into a tensor or does arithmetic with it inside the train step
    (`ops.cast(self.momentum, dtype)`, `1 - self.beta_1`, ...) it is
    `schedule(optimizer.iterations)`: computed in the compiled step on
    TensorFlow (`__tf_tensor__`) and JAX (`__jax_array__`), at each eager step
    on torch (`__array__`). Compared or converted to a float (`momentum != 0`,
    the optimizer's config) it is the hyperparameter's own value; it saves as
    that float.
    """

    dtype = "float32"  # what keras.ops reads to type a value

    def __init__(self, value: float, schedule: Any = None, optimizer: Any = None):
        self.value, self.schedule, self.optimizer = float(value), schedule, optimizer

    def tensor(self) -> Any:
        """The value at the optimizer's update count, as a float32 tensor."""
        return self.schedule.compute(ops.cast(self.optimizer.iterations, "float32"))

    def __tf_tensor__(self, dtype=None, name=None):
        import tensorflow as tf

        value = self.tensor()
        return value if dtype is None else tf.cast(value, dtype)

    def __jax_array__(self):
        return self.tensor()

    def __array__(self, dtype=None, copy=None):
        value = np.asarray(self.schedule(int(ops.convert_to_numpy(self.optimizer.iterations))), "float32")
        return value if dtype is None else value.astype(dtype)

    # The hyperparameter's own value: comparisons, float(), saving.
    def __float__(self):
        return self.value

    def __bool__(self):
        return self.value != 0.0

    def __eq__(self, other):
        return self.value == other

    def __ne__(self, other):
        return self.value != other

    def __lt__(self, other):
        return self.value < other

    def __le__(self, other):
        return self.value <= other

    def __gt__(self, other):
        return self.value > other

    def __ge__(self, other):
        return self.value >= other

    __hash__ = None

    def __reduce__(self):  # copies and pickles as the plain value
        return (float, (self.value,))

    def get_config(self):
        return {"value": self.value}

    @classmethod
    def from_config(cls, config):
        """Loads as the plain value (the schedule lives in the callback)."""
        return config["value"]

    def __repr__(self):
        return f"StepValue({self.value!r}, {self.schedule!r})"

    # Arithmetic inside the step: the scheduled value.
    def __add__(self, other):
        return self.tensor() + other

    def __radd__(self, other):
        return other + self.tensor()

    def __sub__(self, other):
        return self.tensor() - other

    def __rsub__(self, other):
        return other - self.tensor()

    def __mul__(self, other):
        return self.tensor() * other

    def __rmul__(self, other):
        return other * self.tensor()

    def __truediv__(self, other):
        return self.tensor() / other

    def __rtruediv__(self, other):
        return other / self.tensor()

    def __pow__(self, other):
        return self.tensor() ** other

    def __rpow__(self, other):
        return other ** self.tensor()

    def __neg__(self):
        return -self.tensor()


def _strategy_scope(model: keras.Model):
    """The model's `tf.distribute` strategy scope (TensorFlow), else a no-op."""
    import contextlib

    strategy = getattr(model, "distribute_strategy", None) if keras.backend.backend() == "tensorflow" else None
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def _rate_formula(schedule: Any, relative: bool, reference: float | None, steps: Any, base: Any,
                  factor: Any) -> Any:
    """`rate(t) = schedule_b(t) * f` (relative) or `schedule(t) * (b / b_0) * f`."""
    rate = call_schedule(schedule.with_base(base) if relative else schedule, steps)
    if reference is not None:
        rate = rate * (base / reference)
    if factor is not None:
        rate = rate * factor
    return rate


# TensorFlow and JAX: compiled host evaluations, shared by the controllers of
# equal schedules (a second fit() and a tuner's trials compile once), keyed by
# the schedule's serialized config.
_HOST_FUNCTIONS: dict[Any, Any] = {}
_HOST_FUNCTIONS_MAX = 32


def _host_function(controller: RateController) -> Any:
    """A compiled `(steps, b, f) -> rates` for `controller`'s formula (`jax.jit`,
    or a TensorFlow concrete function of a float32 vector and two scalars); it
    holds a copy of the schedule, never the controller (nor its model)."""
    import json

    backend = keras.backend.backend()
    relative, reference, has_factor = controller.relative, controller.reference, controller.factor is not None
    config = _schedule_config(controller)
    key, schedule = None, controller.schedule  # compiled for this controller only
    if config is not None:
        key = (backend, json.dumps(config, sort_keys=True), relative, reference, has_factor)
        schedule = deserialize_schedule(config)
    function = _HOST_FUNCTIONS.get(key) if key is not None else None
    if function is not None:
        return function

    def formula(steps, base, factor):
        return _rate_formula(schedule, relative, reference, steps, base, factor if has_factor else None)

    if backend == "jax":
        import jax

        function = jax.jit(formula)
    else:
        import tensorflow as tf

        scalar = tf.TensorSpec([], tf.float32)
        function = tf.function(formula, autograph=False, input_signature=[
            tf.TensorSpec([None], tf.float32), scalar, scalar]).get_concrete_function()
    if key is not None:
        if len(_HOST_FUNCTIONS) >= _HOST_FUNCTIONS_MAX:
            _HOST_FUNCTIONS.pop(next(iter(_HOST_FUNCTIONS)))
        _HOST_FUNCTIONS[key] = function
    return function


def _schedule_config(controller: RateController) -> Any:
    """`controller`'s schedule as the step uses it, serialized, or `None` when it
    does not serialize or has a class of the user's (its config may not say
    all it computes). A relative schedule's base is rebased on the rate
    variable in the step, so its host value is left out (set to 1)."""
    try:
        schedule = controller.schedule.with_base(1.0) if controller.relative else controller.schedule
        config = serialize_schedule(schedule)
    except Exception:
        return None
    return config if _known_classes(config) else None


def _known_classes(config: Any) -> bool:
    """Whether every object in a serialized schedule is one of keras_trainkit's
    or Keras' own schedules (whose configs hold everything they compute)."""
    if isinstance(config, dict):
        if "class_name" in config and not str(config.get("module", "")).startswith(
                ("keras_trainkit.schedules", "keras.optimizers.schedules")):
            return False
        return all(_known_classes(value) for value in config.values())
    if isinstance(config, (list, tuple)):
        return all(_known_classes(value) for value in config)
    return True


def _tensor_version(variable: Any) -> tuple[int, int] | None:
    """torch: identity and in-place version counter of a variable's tensor."""
    if variable is None:
        return None
    value = variable.value
    return id(value), value._version


def _in_traced_step() -> bool:
    """True while the train step is being traced (TensorFlow backend)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.inside_function()
