"""AdaBelief: Adam with the variance of the gradient around its prediction."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    debias,
    dense_gradient,
    nesterov_debiased,
    scale_by_root,
    update_count,
    update_moment,
)


@register
@document
class AdaBelief(TrainkitOptimizer):
    """AdaBelief: steps scaled by the belief in the gradient's prediction.

    Matches `optax.adabelief` (same defaults and trajectory). Update rule at
    update `t` (from 1) for a variable `w` with gradient `g` and learning rate
    `lr`::

        m <- beta_1 * m + (1 - beta_1) * g
        s <- beta_2 * s + (1 - beta_2) * (g - m)**2 + epsilon_root
        m_hat = m / (1 - beta_1**t)            (Nesterov: see below)
        s_hat = s / (1 - beta_2**t)
        w <- w - lr * m_hat / (sqrt(s_hat) + epsilon)

    With `nesterov=True`, `m_hat = beta_1 * m / (1 - beta_1**(t+1)) +
    (1 - beta_1) * g / (1 - beta_1**t)` (optax's form). Sparse
    (`IndexedSlices`) gradients are densified first, as in optax.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        beta_1: Decay of the first moment, a float in [0, 1). Defaults to
            `0.9`.
        beta_2: Decay of the second central moment, a float in [0, 1).
            Defaults to `0.999`.
        epsilon: Constant > 0 added to the root of `s_hat`. Defaults to
            `1e-16`.
        epsilon_root: Constant >= 0 added to `s` at every update (the paper's
            epsilon). Defaults to `1e-16`.
        nesterov: Use Nesterov momentum. Defaults to `False`.
        {weight_decay}
        {base_args}

    References:
        Zhuang et al., 2020. AdaBelief Optimizer: Adapting Stepsizes by the
        Belief in Observed Gradients. https://arxiv.org/abs/2010.07468

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import AdaBelief
        >>> w = keras.Variable([1.0])
        >>> AdaBelief(learning_rate=0.1).apply([keras.ops.convert_to_tensor([5.0])], [w])
        >>> round(float(w.numpy()[0]), 4)  # 1 - 0.1 * 5 / sqrt(0.9**2 * 25)
        0.8889
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-16,
        epsilon_root=1e-16,
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
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._beliefs = self.add_optimizer_variables(
            variables, ["momentum", "belief"]
        )

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        gradient = dense_gradient(gradient, variable)
        index = self.variable_index(variable)
        b1, b2 = self.beta_1, self.beta_2
        m = update_moment(self, self._momentums[index], gradient, b1)
        surprise = ops.subtract(gradient, m)
        s = update_moment(self, self._beliefs[index], ops.square(surprise), b2, self.epsilon_root)

        t = update_count(self)
        lr = ops.cast(learning_rate, "float32")
        if self.nesterov:
            numerator = nesterov_debiased(m, gradient, b1, t, lr)
        else:
            numerator = ops.multiply(m, debias(b1, t, dtype, lr))
        self.assign_sub(
            variable, scale_by_root(numerator, s, self.epsilon, scale=debias(b2, t, dtype))
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "epsilon_root": self.epsilon_root,
                "nesterov": self.nesterov,
            }
        )
        return config
