"""RAdam: Adam with the variance of its adaptive rate rectified."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    bias_correction,
    debias,
    dense_gradient,
    nesterov_debiased,
    scale_by_root,
    update_count,
    update_moment,
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

    Examples:
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
        gradient = dense_gradient(gradient, variable)
        index = self.variable_index(variable)
        b1, b2 = self.beta_1, self.beta_2
        m = update_moment(self, self._momentums[index], gradient, b1)
        s = update_moment(self, self._velocities[index], ops.square(gradient), b2)

        # Scalars in float32 (as optax computes them), then cast.
        t = update_count(self)
        lr = ops.cast(learning_rate, "float32")
        b2_t = ops.power(b2, t)
        correction_2 = bias_correction(b2, t)  # 1 - b2_t
        rho_inf = 2.0 / (1.0 - b2) - 1.0
        rho_t = rho_inf - ops.divide(ops.multiply(2.0 * t, b2_t), correction_2)
        rectified = ops.greater_equal(rho_t, self.threshold)
        # Clamped so the unused value stays finite while rho_t < 4.
        rho_safe = ops.maximum(rho_t, self.threshold)
        r_t = ops.sqrt(
            ops.divide(
                (rho_safe - 4.0) * (rho_safe - 2.0) * rho_inf,
                ((rho_inf - 4.0) * (rho_inf - 2.0)) * rho_safe,
            )
        )

        # Both phases are one expression, switched by scalars (no branch, so
        # it fuses): unrectified, the root's scale is 0 and epsilon 1, so the
        # denominator is exactly 1 (for a finite s) and the step exactly
        # lr * m_hat.
        def select(rectified_value, plain_value):
            return ops.cast(ops.where(rectified, rectified_value, plain_value), dtype)

        scale = ops.where(rectified, lr * r_t, lr)
        if self.nesterov:
            numerator = nesterov_debiased(m, gradient, b1, t, scale)
        else:
            numerator = ops.multiply(m, debias(b1, t, dtype, scale))
        update = scale_by_root(
            numerator,
            s,
            epsilon=select(self.epsilon, 1.0),
            scale=select(ops.divide(1.0, correction_2), 0.0),
            epsilon_root=select(self.epsilon_root, 0.0) if self.epsilon_root else 0.0,
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
                "threshold": self.threshold,
                "nesterov": self.nesterov,
            }
        )
        return config
