"""Shared base of keras_trainkit's optimizers.

Holds what every optimizer repeats: eager validation of the learning rate and
of Keras' base keyword arguments, the shared part of the docstrings and the
registration decorator. The shared pieces of the update rules are in
`_blocks.py`; the Keras internals the base class needs, in
`keras_trainkit._keras_hooks.OptimizerHooks`.
"""

from __future__ import annotations

from typing import Any

import keras

from keras_trainkit import _validation as v
from keras_trainkit._keras_hooks import OptimizerHooks

register = keras.saving.register_keras_serializable(package="keras_trainkit")

WEIGHT_DECAY_DOC = """weight_decay: Decoupled weight decay: before each update every
            variable not excluded by `exclude_from_weight_decay()` is
            multiplied by `1 - learning_rate * weight_decay`. A float >= 0 or
            `None`. Defaults to `None`."""

BASE_ARGS_DOC = """clipnorm: Clip each gradient to this L2 norm, a float > 0 or `None`.
            Defaults to `None`.
        clipvalue: Clip each gradient element to `[-clipvalue, clipvalue]`,
            a float > 0 or `None`. Defaults to `None`.
        global_clipnorm: Clip all gradients together to this global L2 norm,
            a float > 0 or `None`. Defaults to `None`.
        use_ema: Keep an exponential moving average of the model weights.
            Defaults to `False`.
        ema_momentum: Momentum of that average, in [0, 1]. Defaults to `0.99`.
        ema_overwrite_frequency: Overwrite the model weights with their
            average every this many updates, an int >= 1 or `None` (only at the
            end of training, via `finalize_variable_values`). Defaults to
            `None`.
        loss_scale_factor: Multiply the loss by this float > 0 before
            differentiating and divide the gradients by it. Defaults to
            `None`.
        gradient_accumulation_steps: Update the variables every this many
            steps with the mean of the accumulated gradients, an int >= 2 or
            `None`. Defaults to `None`.
        name: Name of the optimizer, a string or `None` for an automatic name.
            Defaults to `None`."""

LEARNING_RATE_DOC = """A float >= 0, a
            `keras.optimizers.schedules.LearningRateSchedule` of the update
            count, or a callable of no arguments returning the rate."""


def document(cls: type) -> type:
    """Fills the `{learning_rate}`, `{weight_decay}` and `{base_args}` slots."""
    if cls.__doc__:
        for slot, text in (
            ("{learning_rate}", LEARNING_RATE_DOC),
            ("{weight_decay}", WEIGHT_DECAY_DOC),
            ("{base_args}", BASE_ARGS_DOC),
        ):
            cls.__doc__ = cls.__doc__.replace(slot, text)
    return cls


def check_learning_rate(learning_rate: Any) -> Any:
    """A schedule or a callable passes; a number must be finite and >= 0."""
    if callable(learning_rate):
        return learning_rate
    return v.non_negative("learning_rate", learning_rate)


def check_base_args(
    weight_decay: Any,
    clipnorm: Any,
    clipvalue: Any,
    global_clipnorm: Any,
    use_ema: Any,
    ema_momentum: Any,
    ema_overwrite_frequency: Any,
    loss_scale_factor: Any,
    gradient_accumulation_steps: Any,
    name: Any,
) -> dict[str, Any]:
    """Validates Keras' base optimizer arguments, eagerly and by name."""

    def optional(check, arg, value, **kwargs):
        return None if value is None else check(arg, value, **kwargs)

    if name is not None and not isinstance(name, str):
        raise ValueError(f"Argument `name` must be a string or None. Received: name={name!r}")
    return {
        "weight_decay": optional(v.non_negative, "weight_decay", weight_decay),
        "clipnorm": optional(v.positive, "clipnorm", clipnorm),
        "clipvalue": optional(v.positive, "clipvalue", clipvalue),
        "global_clipnorm": optional(v.positive, "global_clipnorm", global_clipnorm),
        "use_ema": v.boolean("use_ema", use_ema),
        "ema_momentum": v.real("ema_momentum", ema_momentum, low=0.0, high=1.0),
        "ema_overwrite_frequency": optional(
            v.integer, "ema_overwrite_frequency", ema_overwrite_frequency, low=1
        ),
        "loss_scale_factor": optional(v.positive, "loss_scale_factor", loss_scale_factor),
        "gradient_accumulation_steps": optional(
            v.integer, "gradient_accumulation_steps", gradient_accumulation_steps, low=2
        ),
        "name": name,
    }


def beta(name: str, value: Any) -> float:
    """A decay rate in [0, 1)."""
    return v.real(name, value, low=0.0, high=1.0, high_inclusive=False)


class TrainkitOptimizer(OptimizerHooks):
    """Validates the learning rate and Keras' base arguments, then defers to Keras.

    Subclasses implement `build` and `update_step` with the public names of
    `OptimizerHooks` (`variable_index`, `applies_weight_decay_to`) and the
    blocks of `_blocks.py`. Those with a weight decay of their own (coupled
    into the update, as in their paper) set `decoupled_weight_decay = False`:
    Keras then does not apply its decoupled decay and the subclass calls
    `_blocks.add_decayed_weights` in `update_step`.
    """

    def __init__(
        self,
        learning_rate,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        use_ema=False,
        ema_momentum=0.99,
        ema_overwrite_frequency=None,
        loss_scale_factor=None,
        gradient_accumulation_steps=None,
        name=None,
        **kwargs,
    ):
        base = check_base_args(
            weight_decay,
            clipnorm,
            clipvalue,
            global_clipnorm,
            use_ema,
            ema_momentum,
            ema_overwrite_frequency,
            loss_scale_factor,
            gradient_accumulation_steps,
            name,
        )
        super().__init__(learning_rate=check_learning_rate(learning_rate), **base, **kwargs)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Keras deserializes the learning rate in place; leave the caller's dict alone.
        return super().from_config(dict(config), custom_objects=custom_objects)
