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
from keras_trainkit.schedules._base import Schedule, call_schedule, serialize_schedule

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
        self.last = None  # float64 [update number, rate], written by the train step
        self._host_fn: tuple[Any, Any] | None = None  # (schedule, compiled evaluator or None)
        self.scale_history: list[tuple[int, float]] = []
        self.summaries = _summaries.ScalarWriter()
        self._written: int | None = None

    # -- what Keras' optimizer calls --------------------------------------
    def __call__(self):
        step = self.optimizer.iterations
        rate = self.rate_at(step)
        if self.last is not None and _in_traced_step():
            # Kept for the epoch logs: (update number, rate), read on the host
            # at epoch end instead of evaluating the schedule eagerly there
            # (a few ms of eager ops per callback and epoch).
            self.last.assign(ops.stack([ops.cast(step, "float64"), ops.cast(rate, "float64")]))
        return rate

    def last_rate(self) -> float:
        """The rate used by the last update applied (for epoch logs)."""
        done = int(ops.convert_to_numpy(self.optimizer.iterations))
        if self.last is not None and done > 0:
            step, rate = ops.convert_to_numpy(self.last)
            if step == done - 1:
                return float(np.float32(rate))
        # Nothing recorded for that update (before the first one, or the last
        # call was an update skipped by a loss-scale optimizer or a partial
        # accumulation step): evaluate the schedule.
        return float(ops.convert_to_numpy(self.rate_at(max(done - 1, 0))))

    def rate_at(self, step):
        step = ops.cast(step, "float32")
        return call_schedule(self.schedule, step) * ops.cast(self.scale, "float32")

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
        updates = np.arange(self._written, done)
        values = self._schedule_on_host(updates.astype("float32"))
        starts = np.array([s for s, _ in self.scale_history])
        scales = np.array([c for _, c in self.scale_history])
        values = values * scales[np.searchsorted(starts, updates, side="right") - 1]
        self.summaries.write({tag: (updates + 1, values)})
        self._written = done

    def _schedule_on_host(self, steps: np.ndarray) -> np.ndarray:
        """`schedule(steps)` for a vector of steps.

        Our schedules are element-wise `keras.ops`; on TensorFlow they run as
        one compiled function (traced once per fit, a few tens of ms, then
        well under a millisecond a call, against a few ms of eager operations).
        """
        schedule = self.schedule
        if self._host_fn is None or self._host_fn[0] is not schedule:
            fn = None
            if keras.backend.backend() == "tensorflow" and isinstance(schedule, (Schedule, numbers.Real)):
                import tensorflow as tf

                fn = tf.function(lambda s: call_schedule(schedule, s), autograph=False, reduce_retracing=True,
                                 input_signature=[tf.TensorSpec([None], tf.float32)])
            self._host_fn = (schedule, fn)
        fn = self._host_fn[1]
        if fn is None:
            return ops.convert_to_numpy(call_schedule(schedule, ops.convert_to_tensor(steps)))
        return fn(steps).numpy()

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
            with model.distribute_strategy.scope():
                controller.scale = keras.Variable(scale, dtype="float32", trainable=False,
                                                  name="learning_rate_scale",
                                                  aggregation="only_first_replica")
                controller.last = keras.Variable([-1.0, 0.0], dtype="float64", trainable=False,
                                                 name="learning_rate_last",
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
