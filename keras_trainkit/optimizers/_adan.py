"""Adan: adaptive Nesterov momentum from gradient differences."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import (
    TrainkitOptimizer,
    beta,
    dense_gradient,
    document,
    register,
)


@register
@document
class Adan(TrainkitOptimizer):
    """Adan: Adam-like moments of the gradient and of its change between steps.

    Matches `optax.adan` (same defaults and trajectory; `weight_decay` is the
    base argument below). Update rule at update `t` (from 1) for a variable
    `w` with gradient `g`, previous gradient `g_prev` and learning rate `lr`::

        d = g - g_prev                     (0 at t = 1)
        m <- beta_1 * m + (1 - beta_1) * g
        v <- beta_2 * v + (1 - beta_2) * d
        n <- beta_3 * n + (1 - beta_3) * (g + (1 - beta_2) * d)**2
        m_hat, v_hat, n_hat = m, v, n divided by 1 - beta_i**t
        u = (m_hat + (1 - beta_2) * v_hat) / (sqrt(n_hat + epsilon_root) + epsilon)
        w <- w - lr * (u + weight_decay * w)

    The betas follow optax's convention (`m <- beta * m + ...`), so optax's
    `b1=0.98, b2=0.92, b3=0.99` are the paper's `beta = 0.02, 0.08, 0.01`.
    Keras' decoupled `weight_decay` gives exactly optax's decay term because
    `u` does not depend on `w`; the paper's proximal form
    `w <- (w - lr * u) / (1 + lr * weight_decay)` differs at second order in
    `lr`. Sparse (`IndexedSlices`) gradients are densified first.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        beta_1: Decay of the gradient's moment, a float in [0, 1). Defaults to
            `0.98`.
        beta_2: Decay of the gradient difference's moment, a float in [0, 1).
            Defaults to `0.92`.
        beta_3: Decay of the second moment, a float in [0, 1). Defaults to
            `0.99`.
        epsilon: Constant > 0 added to the root of `n_hat`. Defaults to
            `1e-8`.
        epsilon_root: Constant >= 0 added to `n_hat` inside the root. Defaults
            to `1e-8`.
        {weight_decay}
        {base_args}

    References:
        Xie et al., 2022. Adan: Adaptive Nesterov Momentum Algorithm for
        Faster Optimizing Deep Models. https://arxiv.org/abs/2208.06677

    Example:
        >>> import keras
        >>> from keras_trainkit.optimizers import Adan
        >>> w = keras.Variable([1.0])
        >>> Adan(learning_rate=0.1).apply([keras.ops.convert_to_tensor([5.0])], [w])
        >>> round(float(w.numpy()[0]), 4)  # step 1: 1 - 0.1 * 5 / 5
        0.9
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.98,
        beta_2=0.92,
        beta_3=0.99,
        epsilon=1e-8,
        epsilon_root=1e-8,
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
        beta_3 = beta("beta_3", beta_3)
        epsilon = v.positive("epsilon", epsilon)
        epsilon_root = v.non_negative("epsilon_root", epsilon_root)
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
        self.beta_3 = beta_3
        self.epsilon = epsilon
        self.epsilon_root = epsilon_root

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        (
            self._momentums,
            self._difference_momentums,
            self._second_moments,
            self._previous_gradients,
        ) = self.add_optimizer_variables(
            variables, ["momentum", "difference", "second_moment", "previous_gradient"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = ops.cast(dense_gradient(gradient, variable), dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        d_m = self._difference_momentums[index]
        n = self._second_moments[index]
        g_prev = self._previous_gradients[index]
        b1, b2, b3 = self.beta_1, self.beta_2, self.beta_3

        t = self._step()
        lr = ops.cast(learning_rate, "float32")
        # (1 - beta_2) * d, with d = 0 on the first update.
        d_weight = ops.cast(ops.where(ops.greater(t, 1.0), 1.0 - b2, 0.0), dtype)
        step_m = ops.cast(lr / (1.0 - ops.power(b1, t)), dtype)
        step_v = ops.cast(lr * (1.0 - b2) / (1.0 - ops.power(b2, t)), dtype)
        scale_n = ops.cast(1.0 / (1.0 - ops.power(b3, t)), dtype)

        weighted_d = ops.multiply(ops.subtract(gradient, g_prev), d_weight)
        self.assign(g_prev, gradient)
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - b1))
        self.assign(d_m, ops.add(ops.multiply(d_m, b2), weighted_d))
        corrected = ops.add(gradient, weighted_d)
        self.assign_add(n, ops.multiply(ops.subtract(ops.square(corrected), n), 1.0 - b3))

        numerator = ops.add(ops.multiply(m, step_m), ops.multiply(d_m, step_v))
        root = ops.multiply(n, scale_n)
        if self.epsilon_root:
            root = ops.add(root, self.epsilon_root)
        self.assign_sub(
            variable, ops.divide(numerator, ops.add(ops.sqrt(root), self.epsilon))
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "beta_3": self.beta_3,
                "epsilon": self.epsilon,
                "epsilon_root": self.epsilon_root,
            }
        )
        return config
