"""Adan: adaptive Nesterov momentum from gradient differences."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    debias,
    dense_gradient,
    scale_by_root,
    update_count,
    update_moment,
    update_trace,
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

    Examples:
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
        gradient = dense_gradient(gradient, variable)
        index = self.variable_index(variable)
        g_prev = self._previous_gradients[index]
        b1, b2, b3 = self.beta_1, self.beta_2, self.beta_3

        t = update_count(self)
        lr = ops.cast(learning_rate, "float32")
        # (1 - beta_2) * d, with d = 0 on the first update.
        d_weight = ops.cast(ops.where(ops.greater(t, 1.0), 1.0 - b2, 0.0), dtype)
        weighted_d = ops.multiply(ops.subtract(gradient, g_prev), d_weight)
        self.assign(g_prev, gradient)
        m = update_moment(self, self._momentums[index], gradient, b1)
        v = update_trace(self, self._difference_momentums[index], weighted_d, b2)
        corrected = ops.add(gradient, weighted_d)
        n = update_moment(self, self._second_moments[index], ops.square(corrected), b3)

        numerator = ops.add(
            ops.multiply(m, debias(b1, t, dtype, lr)),
            ops.multiply(v, debias(b2, t, dtype, lr * (1.0 - b2))),
        )
        update = scale_by_root(
            numerator, n, self.epsilon, scale=debias(b3, t, dtype), epsilon_root=self.epsilon_root
        )
        self.assign_sub(variable, update)

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
