"""Adam, with AMSGrad and an option to turn bias correction off."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    bias_correction,
    scale_by_root,
    update_count,
    update_moment,
)


@register
@document
class Adam(TrainkitOptimizer):
    """Adam: momentum divided by a running root mean square, both bias-corrected.

    A drop-in for `keras.optimizers.Adam`: same arguments, defaults and
    trajectory, plus `bias_correction`. Update rule at update `t` (from 1) for
    a variable `w` with gradient `g` and learning rate `lr`::

        m <- beta_1 * m + (1 - beta_1) * g
        s <- beta_2 * s + (1 - beta_2) * g**2
        amsgrad:  s_max <- max(s_max, s) and s_max replaces s below
        bias_correction=True (Keras' "epsilon hat" form):
            w <- w - lr * sqrt(1 - beta_2**t) / (1 - beta_1**t) * m / (sqrt(s) + epsilon)
        bias_correction=False (the formula of many guides):
            w <- w - lr * m / (sqrt(s) + epsilon)

    The first form equals the paper's `m_hat / (sqrt(s_hat) + epsilon_hat)`
    with `m_hat = m / (1 - beta_1**t)`, `s_hat = s / (1 - beta_2**t)` and
    `epsilon_hat = epsilon / sqrt(1 - beta_2**t)`. Without bias correction
    the early steps are about `1 - beta_1` times smaller.

    With `IndexedSlices` gradients (an `Embedding` on TensorFlow) a row
    repeated in the batch contributes the sum of its squared slices to `s`,
    as in Keras.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        beta_1: Decay of the first moment, a float in [0, 1). Defaults to
            `0.9`.
        beta_2: Decay of the second moment, a float in [0, 1). Defaults to
            `0.999`.
        epsilon: Small constant > 0 added to `sqrt(s)`. Defaults to `1e-7`.
        amsgrad: Divide by the running maximum of `s` (AMSGrad). Defaults to
            `False`.
        bias_correction: Correct the zero initialisation of `m` and `s`.
            Defaults to `True`.
        {weight_decay}
        {base_args}

    References:
        Kingma & Ba, 2015. Adam: A Method for Stochastic Optimization.
        https://arxiv.org/abs/1412.6980
        Reddi, Kale & Kumar, 2018. On the Convergence of Adam and Beyond
        (AMSGrad). https://arxiv.org/abs/1904.09237

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import Adam
        >>> w = keras.Variable([1.0])
        >>> Adam(learning_rate=0.1).apply([keras.ops.convert_to_tensor([5.0])], [w])
        >>> round(float(w.numpy()[0]), 4)
        0.9
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        amsgrad=False,
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
        bias_correction=True,
        **kwargs,
    ):
        beta_1 = beta("beta_1", beta_1)
        beta_2 = beta("beta_2", beta_2)
        epsilon = v.positive("epsilon", epsilon)
        amsgrad = v.boolean("amsgrad", amsgrad)
        bias_correction = v.boolean("bias_correction", bias_correction)
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
        self.amsgrad = amsgrad
        self.bias_correction = bias_correction

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums, self._velocities = self.add_optimizer_variables(
            variables, ["momentum", "velocity"]
        )
        if self.amsgrad:
            self._velocity_maxima = self.add_optimizer_variables(variables, "velocity_hat")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = ops.cast(gradient, dtype)
        index = self.variable_index(variable)
        if self.bias_correction:
            t = update_count(self, dtype)
            alpha = lr * ops.sqrt(bias_correction(self.beta_2, t)) / bias_correction(self.beta_1, t)
        else:
            alpha = lr
        # Dense from here on: subtracting the dense moment merges IndexedSlices
        # rows (after squaring them, for `s`), exactly as Keras does.
        m = update_moment(self, self._momentums[index], gradient, self.beta_1)
        s = update_moment(self, self._velocities[index], ops.square(gradient), self.beta_2)
        if self.amsgrad:
            s_max = self._velocity_maxima[index]
            self.assign(s_max, ops.maximum(s_max, s))
            s = s_max
        self.assign_sub(variable, scale_by_root(ops.multiply(m, alpha), s, self.epsilon))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "amsgrad": self.amsgrad,
                "bias_correction": self.bias_correction,
            }
        )
        return config
