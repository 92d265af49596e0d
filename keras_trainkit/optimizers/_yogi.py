"""Yogi: Adam with an additive, sign-controlled second-moment update."""

from __future__ import annotations

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    debias,
    dense_gradient,
    scale_by_root,
    update_count,
    update_moment,
)


@register
@document
class Yogi(TrainkitOptimizer):
    """Yogi: the second moment moves additively towards `g**2`, never jumps.

    Matches `optax.yogi` (same defaults and trajectory). Update rule at update
    `t` (from 1) for a variable `w` with gradient `g` and learning rate `lr`,
    with `m` and `s` both starting at `initial_accumulator_value`::

        m <- beta_1 * m + (1 - beta_1) * g
        s <- s - (1 - beta_2) * sign(s - g**2) * g**2
        m_hat = m / (1 - beta_1**t)
        s_hat = s / (1 - beta_2**t)
        w <- w - lr * m_hat / (sqrt(s_hat + epsilon_root) + epsilon)

    Like optax, this applies Adam's bias correction and starts the first
    moment at `initial_accumulator_value` too (the paper starts only `s`
    there). Sparse (`IndexedSlices`) gradients are densified first.

    Args:
        learning_rate: {learning_rate} Defaults to `0.01`.
        beta_1: Decay of the first moment, a float in [0, 1). Defaults to
            `0.9`.
        beta_2: Rate of the second moment, a float in [0, 1). Defaults to
            `0.999`.
        epsilon: Constant > 0 added to the root of `s_hat`; Yogi uses a large
            one. Defaults to `1e-3`.
        epsilon_root: Constant >= 0 added to `s_hat` inside the root. Defaults
            to `0.0`.
        initial_accumulator_value: Starting value of `m` and `s`, a float
            >= 0. Defaults to `1e-6`.
        {weight_decay}
        {base_args}

    References:
        Zaheer et al., 2018. Adaptive Methods for Nonconvex Optimization.
        https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import Yogi
        >>> w = keras.Variable([1.0])
        >>> Yogi(learning_rate=0.1).apply([keras.ops.convert_to_tensor([5.0])], [w])
        >>> round(float(w.numpy()[0]), 3)
        0.9
    """

    def __init__(
        self,
        learning_rate=0.01,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-3,
        epsilon_root=0.0,
        initial_accumulator_value=1e-6,
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
        beta_1 = beta("beta_1", beta_1)
        beta_2 = beta("beta_2", beta_2)
        epsilon = v.positive("epsilon", epsilon)
        epsilon_root = v.non_negative("epsilon_root", epsilon_root)
        initial_accumulator_value = v.non_negative(
            "initial_accumulator_value", initial_accumulator_value
        )
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
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.epsilon_root = epsilon_root
        self.initial_accumulator_value = initial_accumulator_value

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = self.add_optimizer_variables(
            variables,
            ["momentum", "velocity"],
            initializer=keras.initializers.Constant(self.initial_accumulator_value),
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = dense_gradient(gradient, variable)
        index = self.variable_index(variable)
        m = update_moment(self, self._momentums[index], gradient, self.beta_1)
        # Yogi's own second moment: an additive step towards g**2.
        s = self._velocities[index]
        g2 = ops.square(gradient)
        self.assign_sub(s, ops.multiply(ops.sign(ops.subtract(s, g2)), ops.multiply(g2, 1.0 - self.beta_2)))

        t = update_count(self)
        lr = ops.cast(learning_rate, "float32")
        update = scale_by_root(
            ops.multiply(m, debias(self.beta_1, t, dtype, lr)),
            s,
            self.epsilon,
            scale=debias(self.beta_2, t, dtype),
            epsilon_root=self.epsilon_root,
        )
        self.assign_sub(variable, update)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "epsilon_root": self.epsilon_root,
                "initial_accumulator_value": self.initial_accumulator_value,
            }
        )
        return config
