"""The per-optimizer rate controller behind the learning-rate callbacks.

While at least one keras_trainkit learning-rate callback is active in `fit()`,
the optimizer's `_learning_rate` is replaced by a `RateController`: a callable
that Keras' optimizer evaluates inside the compiled train step, at every
update, as

    rate(t) = schedule(t) * scale,     t = optimizer.iterations

where `schedule` is composed from the callbacks (the decay callback's schedule,
or the optimizer's own rate, wrapped by the WarmUp callback's ramp) and
`scale` is a variable changed only when something assigns
`optimizer.learning_rate` (e.g. `keras.callbacks.ReduceLROnPlateau`): the
assignment rescales the scheduled rate instead of being overwritten at the
next step. The optimizer's own learning-rate variable is left untouched and
stays tracked, so checkpoints save the same variables with or without the
callbacks. When the last callback ends its `fit()`, the original learning rate
is put back.
"""

from __future__ import annotations

import numbers
from typing import Any

import keras
import numpy as np
from keras import ops

from keras_trainkit.callbacks import _summaries, _train_hooks
from keras_trainkit.schedules._base import call_schedule, serialize_schedule

_CONTROLLER = "_keras_trainkit_rate_controller"
_SCALE = "_keras_trainkit_rate_scale"
LR = keras.optimizers.schedules.LearningRateSchedule


def own_rate(optimizer: keras.optimizers.Optimizer) -> Any:
    """The optimizer's learning rate as Keras holds it (not our controller)."""
    lr = optimizer._learning_rate
    return lr.original if isinstance(lr, RateController) else lr


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
        f"float or a LearningRateSchedule learning rate. Received: learning_rate={rate!r}"
    )


@keras.saving.register_keras_serializable(package="keras_trainkit")
class RateController:
    """Stands in for `optimizer._learning_rate` while LR callbacks run."""

    def __init__(self, optimizer: keras.optimizers.Optimizer | None = None, original: Any = None):
        self.optimizer = optimizer
        self.original = original
        self.callbacks: list[Any] = []
        self.schedule: Any = None
        self.scale = None
        self._host_fn: tuple[Any, Any] | None = None  # (schedule, compiled evaluator or None)
        self._cache: tuple[Any, int, int, np.ndarray] | None = None  # (schedule, scales, first update, rates)
        self.scale_history: list[tuple[int, float]] = []
        self.summaries = _summaries.ScalarWriter()
        self._written: int | None = None

    # -- what Keras' optimizer calls --------------------------------------
    def __call__(self):
        step = self.optimizer.iterations
        if _in_traced_step() or keras.backend.backend() != "tensorflow":
            return self.rate_at(step)
        # Eager read (`optimizer.learning_rate`, e.g. by keras.callbacks.TensorBoard
        # at each epoch end): the compiled evaluation, not a few ms of eager ops.
        return ops.convert_to_tensor(self.rate_of_update(int(ops.convert_to_numpy(step))))

    def last_rate(self) -> float:
        """The rate used by the last update applied (for epoch logs).

        Computed on the host from the update count (no per-step record in the
        train step): `schedule(n - 1) * scale`, with the scale in effect then.
        """
        return float(self.rate_of_update(max(int(ops.convert_to_numpy(self.optimizer.iterations)) - 1, 0)))

    def rate_of_update(self, update: int) -> np.float32:
        """The rate update number `update` uses (see `rates_on_host`), cached:
        each epoch end evaluates the schedule once (a compiled call costs
        about as much as a few eager operations) for its TensorBoard rates,
        the epoch logs of every LR callback and Keras' TensorBoard, which
        reads `optimizer.learning_rate` (the next update's rate)."""
        cached = self._cache
        if not (cached is not None and cached[0] is self.schedule and cached[1] == len(self.scale_history)
                and cached[2] <= update < cached[2] + len(cached[3])):
            self.rates_on_host(np.arange(update, update + 2))  # this update and the next
            cached = self._cache
        return cached[3][update - cached[2]]

    def rate_at(self, step):
        step = ops.cast(step, "float32")
        return call_schedule(self.schedule, step) * ops.cast(self.scale, "float32")

    def rates_on_host(self, updates: np.ndarray) -> np.ndarray:
        """float32 rates used by the given update numbers, as the train step
        computes them: `schedule(n) * scale`, with the scale in effect at `n`."""
        values = self._schedule_on_host(updates.astype("float32"))
        starts = np.array([s for s, _ in self.scale_history])
        scales = np.array([c for _, c in self.scale_history], dtype="float32")
        values = values * scales[np.searchsorted(starts, updates, side="right") - 1]
        if len(updates) and np.array_equal(updates, np.arange(updates[0], updates[0] + len(updates))):
            # A range of updates (each epoch's, for TensorBoard): the epoch
            # logs read its last value instead of evaluating again. A scale
            # change or a new schedule invalidates it.
            self._cache = (self.schedule, len(self.scale_history), int(updates[0]), values)
        return values

    def assign(self, value):
        """`optimizer.learning_rate = value` rescales the scheduled rate."""
        value = float(ops.convert_to_numpy(value))
        current = float(ops.convert_to_numpy(self()))
        if current == value:
            return
        if current == 0.0:
            raise ValueError(
                "Cannot set the learning rate while the keras_trainkit schedule gives 0 at "
                f"update {int(ops.convert_to_numpy(self.optimizer.iterations))}: a scheduled rate is changed by "
                f"rescaling it. Received: learning_rate={value!r}"
            )
        new_scale = float(ops.convert_to_numpy(self.scale)) * value / current
        self.scale.assign(new_scale)
        setattr(self.optimizer, _SCALE, new_scale)
        self.scale_history.append((int(ops.convert_to_numpy(self.optimizer.iterations)), new_scale))

    # -- saving mid-training (ModelCheckpoint) -----------------------------
    def get_config(self):
        original = self.original
        if isinstance(original, keras.Variable):
            original = float(ops.convert_to_numpy(original))
        return {"original": serialize_schedule(original)}

    @classmethod
    def from_config(cls, config):
        """Loads as the optimizer's own rate: the schedule lives in the callbacks."""
        original = config["original"]
        if isinstance(original, dict):
            return keras.saving.deserialize_keras_object(original)
        return original

    # -- composition ----------------------------------------------------------
    def compose(self) -> None:
        roles: dict[str, list[Any]] = {"decay": [], "warmup": []}
        for cb in self.callbacks:
            roles[cb._role].append(cb)
        for role, cbs in roles.items():
            if len(cbs) > 1:
                names = ", ".join(type(c).__name__ for c in cbs)
                raise ValueError(
                    f"At most one {role} learning-rate callback can drive an optimizer; "
                    f"received {len(cbs)} for optimizer {self.optimizer.name!r}: {names}. "
                    "Compose the schedule with keras_trainkit.schedules (e.g. JoinSchedules) "
                    "and pass it to callbacks.LearningRateSchedule instead."
                )
        base = self.original
        if isinstance(base, keras.Variable):
            base = rate_at_zero(base)
        for cb in roles["decay"]:
            base = cb._build_schedule(self.optimizer)
        for cb in roles["warmup"]:
            base = cb._build_schedule(self.optimizer, base)
        self.schedule = base

    # -- TensorBoard ------------------------------------------------------------
    def start_epoch(self) -> None:
        if self._written is None:
            self._written = int(ops.convert_to_numpy(self.optimizer.iterations))

    def write_summaries(self, tag: str) -> None:
        """Writes the rate of every update since the last call, one scalar per step.

        Step `n` holds the rate used by the n-th update (n >= 1), which is where
        keras.callbacks.TensorBoard puts that batch's loss.
        """
        if not self.summaries.dirs or self._written is None:
            return
        done = int(ops.convert_to_numpy(self.optimizer.iterations))
        if done <= self._written:
            return
        # One more than written: the next update's rate, which the cache then
        # holds for Keras' TensorBoard.
        updates = np.arange(self._written, done + 1)
        self.summaries.write({tag: (updates[:-1] + 1, self.rates_on_host(updates)[:-1])})
        self._written = done

    def _schedule_on_host(self, steps: np.ndarray) -> np.ndarray:
        """`schedule(steps)` for a float32 vector of steps, as float32 numpy.

        On TensorFlow, one concrete function per schedule (traced once per
        fit, then a fraction of a millisecond a call, against a few ms of
        eager operations per step); elsewhere, eager evaluation.
        """
        schedule = self.schedule
        if self._host_fn is None or self._host_fn[0] is not schedule:
            fn = None
            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                fn = tf.function(lambda s: call_schedule(schedule, s), autograph=False,
                                 input_signature=[tf.TensorSpec([None], tf.float32)]).get_concrete_function()
            self._host_fn = (schedule, fn)
        fn = self._host_fn[1]
        if fn is None:
            return np.asarray(ops.convert_to_numpy(call_schedule(schedule, ops.convert_to_tensor(steps))), "float32")
        import tensorflow as tf

        return fn(tf.constant(steps, tf.float32)).numpy()

    def close(self) -> None:
        self.summaries.close()


def attach(callback: Any, model: keras.Model) -> list[RateController]:
    """Registers `callback` with the controller of each of the model's optimizers."""
    _train_hooks.check_backend()
    controllers, installed = [], False
    for optimizer in _train_hooks.target_optimizers(model):
        controller = optimizer.__dict__.get(_CONTROLLER)
        if controller is None:
            original = optimizer._learning_rate
            rate_at_zero(original)  # validates the kind of learning rate
            controller = RateController(optimizer, original)
            scale = getattr(optimizer, _SCALE, 1.0)
            with _train_hooks.strategy_scope(model):
                controller.scale = keras.Variable(scale, dtype="float32", trainable=False,
                                                  name="learning_rate_scale",
                                                  aggregation="only_first_replica")
            controller.scale_history = [(0, scale)]
            object.__setattr__(optimizer, _CONTROLLER, controller)
            # Assigned directly: the `learning_rate` setter would untrack the
            # optimizer's variable and change what checkpoints contain.
            object.__setattr__(optimizer, "_learning_rate", controller)
            installed = True
        controller.callbacks.append(callback)
        controller.compose()
        controllers.append(controller)
    if installed:
        # fit() made its train function before on_train_begin, possibly
        # reusing one traced with the previous learning rate: rebuild it.
        model.make_train_function(force=True)
    return controllers


def detach(callback: Any, model: keras.Model) -> None:
    for optimizer in _train_hooks.target_optimizers(model):
        controller = optimizer.__dict__.get(_CONTROLLER)
        if controller is None or callback not in controller.callbacks:
            continue
        controller.callbacks.remove(callback)
        if controller.callbacks:
            controller.compose()
            continue
        controller.close()
        object.__setattr__(optimizer, "_learning_rate", controller.original)
        object.__delattr__(optimizer, _CONTROLLER)
        # Drop the train function traced with the controller.
        model.make_train_function(force=True)


def rate_logs(model: keras.Model) -> dict[str, float]:
    """`learning_rate` (`learning_rate_<name>` per optimizer of a
    MultiOptimizer): the rate used by the last update, for the epoch logs."""
    optimizers = _train_hooks.target_optimizers(model)
    logs = {}
    for optimizer in optimizers:
        controller = optimizer.__dict__.get(_CONTROLLER)
        if controller is not None:
            key = "learning_rate" if len(optimizers) == 1 else f"learning_rate_{optimizer.name}"
            logs[key] = controller.last_rate()
    return logs


def _in_traced_step() -> bool:
    """True while the train step is being traced (TensorFlow backend)."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.inside_function()
