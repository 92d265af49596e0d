"""Adagrad: per-coordinate rates from the sum of squared gradients."""

from __future__ import annotations

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, document, register
from keras_trainkit.optimizers._blocks import scale_by_root


@register
@document
class Adagrad(TrainkitOptimizer):
    """Adagrad: each coordinate's rate shrinks with its accumulated squared gradients.

    A drop-in for `keras.optimizers.Adagrad`: same arguments, defaults and
    trajectory. Update rule for a variable `w` with gradient `g`, learning
    rate `lr`, accumulator `a` starting at `initial_accumulator_value`::

        a <- a + g**2
        w <- w - lr * g / sqrt(a + epsilon)

    With `IndexedSlices` gradients (an `Embedding` on TensorFlow) only the rows
    present are touched, and a row repeated in the batch adds the sum of its
    squared slices to `a`, as in Keras.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        initial_accumulator_value: Starting value of `a`, a float >= 0.
            Defaults to `0.1`.
        epsilon: Small constant > 0 inside the square root. Defaults to `1e-7`.
        {weight_decay}
        {base_args}

    References:
        Duchi, Hazan & Singer, 2011. Adaptive Subgradient Methods for Online
        Learning and Stochastic Optimization.
        https://jmlr.org/papers/v12/duchi11a.html

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import Adagrad
        >>> w = keras.Variable([1.0])
        >>> Adagrad(learning_rate=0.1, initial_accumulator_value=0.0).apply(
        ...     [keras.ops.convert_to_tensor([2.0])], [w])
        >>> round(float(w.numpy()[0]), 4)
        0.9
    """

    def __init__(
        self,
        learning_rate=0.001,
        initial_accumulator_value=0.1,
        epsilon=1e-7,
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
        initial_accumulator_value = v.non_negative(
            "initial_accumulator_value", initial_accumulator_value
        )
        epsilon = v.positive("epsilon", epsilon)
        super().__init__(
            learning_rate=learning_rate,
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
        self.initial_accumulator_value = initial_accumulator_value
        self.epsilon = epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._accumulators = self.add_optimizer_variables(
            variables,
            "accumulator",
            initializer=keras.initializers.Constant(self.initial_accumulator_value),
        )

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        accumulator = self._accumulators[self.variable_index(variable)]
        self.assign_add(accumulator, ops.square(gradient))
        # Sparse rows stay sparse: only the rows present are updated.
        self.assign_sub(
            variable,
            scale_by_root(ops.multiply(lr, gradient), accumulator, epsilon=0.0, epsilon_root=self.epsilon),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "initial_accumulator_value": self.initial_accumulator_value,
                "epsilon": self.epsilon,
            }
        )
        return config
