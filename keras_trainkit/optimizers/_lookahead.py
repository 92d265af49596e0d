"""Lookahead: k fast steps forward, one slow step back, around any optimizer."""

from __future__ import annotations

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit._keras_hooks import WholeStepOptimizer
from keras_trainkit.optimizers._base import TrainkitOptimizer, document, register


def _copy_of(variable):
    """An initializer returning the current value of `variable`."""

    def initializer(shape, dtype=None):
        # A copy: on JAX, sharing the model variable's buffer breaks donation.
        return ops.copy(ops.cast(ops.convert_to_tensor(variable), dtype or variable.dtype))

    return initializer


@register
@document
class Lookahead(TrainkitOptimizer, WholeStepOptimizer):
    """Lookahead around any Keras optimizer: slow weights pulled towards fast ones.

    Matches `optax.lookahead` (`reset_state=False`) with the same inner
    optimizer and trajectory. The model's variables are the fast weights
    `w`; the wrapper keeps slow weights `phi` (starting at `w`) as optimizer
    variables, so `model.save` / `keras.saving.load_model` resume exactly.
    At update `t` (from 1)::

        w <- inner_optimizer step of w
        every sync_period-th update (t % sync_period == 0):
            phi <- phi + slow_step_size * (w - phi)
            w   <- phi

    The inner optimizer keeps its own learning rate, schedule, clipping,
    weight decay and update count; the wrapper's `learning_rate` reads and
    sets the inner one. The base arguments below act
    on the wrapper: its clipping and loss scaling transform the gradients
    before the inner optimizer sees them, its gradient accumulation delays
    whole (inner + sync) steps, its EMA averages the fast weights, and its
    decoupled `weight_decay` uses the inner learning rate. Evaluate with the
    fast weights, as optax's example does; the slow weights are
    `optimizer.slow_weights`. The inner optimizer is `inner_optimizer` (the
    attribute Keras' `LossScaleOptimizer` uses, so code that unwraps wrappers
    finds it; `optimizer` is the same object).

    Args:
        optimizer: The inner (fast) `keras.optimizers.Optimizer`, or its
            name or config. Defaults to `"adam"`.
        sync_period: Fast steps between synchronisations, `k`, an int >= 1.
            Defaults to `5`.
        slow_step_size: Slow step size `alpha`, a float in [0, 1]. Defaults
            to `0.5`.
        {weight_decay}
        {base_args}

    References:
        Zhang, Lucas, Hinton & Ba, 2019. Lookahead Optimizer: k steps forward,
        1 step back. https://arxiv.org/abs/1907.08610

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import Lookahead
        >>> w = keras.Variable([0.0])
        >>> opt = Lookahead(keras.optimizers.SGD(1.0), sync_period=2, slow_step_size=0.5)
        >>> for _ in range(2):
        ...     opt.apply([keras.ops.convert_to_tensor([-1.0])], [w])
        >>> float(w.numpy()[0])  # fast weights reach 2, slow weights move halfway
        1.0
    """

    def __init__(
        self,
        optimizer="adam",
        sync_period=5,
        slow_step_size=0.5,
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
        if "learning_rate" in kwargs:
            raise ValueError(
                "Argument `learning_rate` is not accepted by Lookahead: set it on the "
                f"inner optimizer. Received: learning_rate={kwargs['learning_rate']!r}"
            )
        if isinstance(optimizer, (str, dict)):
            optimizer = keras.optimizers.get(optimizer)
        if not isinstance(optimizer, keras.optimizers.Optimizer):
            raise ValueError(
                "Argument `optimizer` must be a keras.optimizers.Optimizer, its "
                f"name or its config. Received: optimizer={optimizer!r}"
            )
        sync_period = v.integer("sync_period", sync_period, low=1)
        slow_step_size = v.real("slow_step_size", slow_step_size, low=0.0, high=1.0)
        super().__init__(
            learning_rate=0.0,
            weight_decay=weight_decay,
            clipnorm=clipnorm,
            clipvalue=clipvalue,
            global_clipnorm=global_clipnorm,
            use_ema=use_ema,
            ema_momentum=ema_momentum,
            ema_overwrite_frequency=ema_overwrite_frequency,
            loss_scale_factor=loss_scale_factor,
            gradient_accumulation_steps=gradient_accumulation_steps,
            name=name,
            **kwargs,
        )
        self.optimizer = optimizer
        self.sync_period = sync_period
        self.slow_step_size = slow_step_size

    @property
    def learning_rate(self):
        """The inner optimizer's learning rate (read and set there)."""
        return self.optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate):
        self.optimizer.learning_rate = learning_rate

    @property
    def inner_optimizer(self):
        """The wrapped (fast) optimizer, read-only: the same object as `optimizer`."""
        return self.optimizer

    @property
    def variables(self):
        """The wrapper's variables (update count, slow weights), then the inner optimizer's."""
        return super().variables + self.optimizer.variables

    @property
    def slow_weights(self):
        """The slow weights, one per variable the optimizer was built with."""
        return list(self._slow_weights)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._slow_weights = [
            self.add_variable_from_reference(variable, "slow", initializer=_copy_of(variable))
            for variable in variables
        ]
        self.optimizer.build(variables)

    def whole_step(self, grads, trainable_variables, learning_rate):
        # The whole inner step (its own clipping, decay, schedule and update
        # count), then the synchronisation on every sync_period-th step.
        self.optimizer.apply(grads, trainable_variables)
        sync = ops.equal(ops.mod(ops.add(self.iterations, 1), self.sync_period), 0)

        def synchronise():
            for variable in trainable_variables:
                slow = self._slow_weights[self.variable_index(variable)]
                alpha = ops.cast(self.slow_step_size, variable.dtype)
                fast_value = ops.convert_to_tensor(variable)
                slow_value = ops.convert_to_tensor(slow)
                new_slow = ops.add(slow_value, ops.multiply(ops.subtract(fast_value, slow_value), alpha))
                if self.sync_period > 1 and keras.backend.backend() == "jax":
                    # No side effects inside lax.cond: select instead.
                    new_slow = ops.where(sync, new_slow, slow_value)
                    self.assign(variable, ops.where(sync, new_slow, fast_value))
                else:
                    self.assign(variable, new_slow)
                self.assign(slow, new_slow)

        if self.sync_period == 1 or keras.backend.backend() == "jax":
            synchronise()
        else:
            # A real branch: the synchronisation ops run only on sync steps.
            ops.cond(sync, synchronise, lambda: None)

    def finalize_variable_values(self, var_list):
        super().finalize_variable_values(var_list)
        self.optimizer.finalize_variable_values(var_list)

    def get_config(self):
        config = super().get_config()
        del config["learning_rate"]
        config.update(
            {
                "optimizer": keras.saving.serialize_keras_object(self.optimizer),
                "sync_period": self.sync_period,
                "slow_step_size": self.slow_step_size,
            }
        )
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["optimizer"] = keras.saving.deserialize_keras_object(
            config["optimizer"], custom_objects=custom_objects
        )
        return cls(**config)
