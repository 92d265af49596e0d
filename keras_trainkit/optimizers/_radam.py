"""RAdam: Adam with the variance of its adaptive rate rectified."""

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
class RAdam(TrainkitOptimizer):
    """Rectified Adam: plain momentum until the adaptive rate's variance is tractable.

    Matches `optax.radam` (same defaults and trajectory). Update rule at
    update `t` (from 1) for a variable `w` with gradient `g` and learning rate
    `lr`::

        m <- beta_1 * m + (1 - beta_1) * g
        s <- beta_2 * s + (1 - beta_2) * g**2
        m_hat = m / (1 - beta_1**t)            (Nesterov: see below)
        s_hat = s / (1 - beta_2**t)
        rho_inf = 2 / (1 - beta_2) - 1
        rho_t = rho_inf - 2 * t * beta_2**t / (1 - beta_2**t)
        if rho_t >= threshold:
            r_t = sqrt((rho_t - 4) (rho_t - 2) rho_inf / ((rho_inf - 4) (rho_inf - 2) rho_t))
            w <- w - lr * r_t * m_hat / (sqrt(s_hat + epsilon_root) + epsilon)
        else:
            w <- w - lr * m_hat

    With `nesterov=True`, `m_hat = beta_1 * m / (1 - beta_1**(t+1)) +
    (1 - beta_1) * g / (1 - beta_1**t)` (optax's form).

    The paper switches at `rho_t > 4`; optax, the authors' code and this class
    use `threshold=5`. Sparse (`IndexedSlices`) gradients are densified first,
    so every row's moments decay at every step, as in optax.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        beta_1: Decay of the first moment, a float in [0, 1). Defaults to
            `0.9`.
        beta_2: Decay of the second moment, a float in [0, 1). Defaults to
            `0.999`.
        epsilon: Constant > 0 added to the root of `s_hat`. Defaults to `1e-8`.
        epsilon_root: Constant >= 0 added to `s_hat` inside the root. Defaults
            to `0.0`.
        threshold: Smallest `rho_t` for which the rectified adaptive step is
            used, a float >= 4 (the rectification term is undefined below 4).
            Defaults to `5.0`.
        nesterov: Use Nesterov momentum. Defaults to `False`.
        {weight_decay}
        {base_args}

    References:
        Liu et al., 2020. On the Variance of the Adaptive Learning Rate and
        Beyond. https://arxiv.org/abs/1908.03265

    Example:
        >>> import keras
        >>> from keras_trainkit.optimizers import RAdam
        >>> w = keras.Variable([1.0])
        >>> RAdam(learning_rate=0.1).apply([keras.ops.convert_to_tensor([5.0])], [w])
        >>> round(float(w.numpy()[0]), 4)  # step 1 is plain momentum: 1 - 0.1 * 5
        0.5
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        epsilon_root=0.0,
        threshold=5.0,
        nesterov=False,
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
        threshold = v.real("threshold", threshold, low=4.0)
        nesterov = v.boolean("nesterov", nesterov)
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
        self.threshold = threshold
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = self.add_optimizer_variables(
            variables, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = ops.cast(dense_gradient(gradient, variable), dtype)
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        s = self._velocities[index]
        b1, b2 = self.beta_1, self.beta_2

        # Scalars in float32 (as optax computes them), then cast.
        t = self._step()
        lr = ops.cast(learning_rate, "float32")
        b2_t = ops.power(b2, t)
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - ops.divide(ops.multiply(2.0 * t, b2_t), 1.0 - b2_t)
        rectified = ops.greater_equal(rho_t, self.threshold)
        # Clamped so the unused branch stays finite while rho_t < 4.
        rho_safe = ops.maximum(rho_t, self.threshold)
        r_t = ops.sqrt(
            ops.divide(
                (rho_safe - 4.0) * (rho_safe - 2.0) * rho_inf,
                ((rho_inf - 4.0) * (rho_inf - 2.0)) * rho_safe,
            )
        )
        bias_1 = 1.0 - ops.power(b1, t)
        scale_s = ops.cast(1.0 / (1.0 - b2_t), dtype)

        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - b1))
        self.assign_add(s, ops.multiply(ops.subtract(ops.square(gradient), s), 1.0 - b2))
        if self.nesterov:
            bias_1_next = 1.0 - ops.power(b1, t + 1.0)
            m_hat = ops.add(
                ops.multiply(m, ops.cast(b1 / bias_1_next, dtype)),
                ops.multiply(gradient, ops.cast((1.0 - b1) / bias_1, dtype)),
            )
            step_rect = ops.cast(lr * r_t, dtype)
            step_plain = ops.cast(lr, dtype)
        else:
            m_hat = m
            step_rect = ops.cast(lr * r_t / bias_1, dtype)
            step_plain = ops.cast(lr / bias_1, dtype)

        def rectified_update():
            root = ops.multiply(s, scale_s)
            if self.epsilon_root:
                root = ops.add(root, self.epsilon_root)
            return ops.divide(
                ops.multiply(m_hat, step_rect), ops.add(ops.sqrt(root), self.epsilon)
            )

        def plain_update():
            return ops.multiply(m_hat, step_plain)

        self.assign_sub(variable, ops.cond(rectified, rectified_update, plain_update))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "epsilon_root": self.epsilon_root,
                "threshold": self.threshold,
                "nesterov": self.nesterov,
            }
        )
        return config
