"""LARS: momentum SGD with a layer-wise trust ratio."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, document, register
from keras_trainkit.optimizers._blocks import (
    add_decayed_weights,
    apply_momentum,
    dense_gradient,
    trust_ratio,
)


@register
@document
class LARS(TrainkitOptimizer):
    """LARS: each variable's step is scaled by the ratio of its norm to its gradient's.

    Matches `optax.lars` (same defaults and trajectory, all variables
    adapted). Update rule for a variable `w` (a whole layer's kernel or bias)
    with gradient `g`, learning rate `lr` and momentum `mu`::

        u = g + weight_decay * w
        ratio = trust_coefficient * ||w|| / (||u|| + epsilon)
                (1 when ||w|| or ||u|| is 0)
        b <- mu * b - lr * ratio * u
        w <- w + b                      (Nesterov: w <- w + mu * b - lr * ratio * u)

    `weight_decay` here is LARS' own, coupled decay: it enters `u`, hence the
    trust ratio, as in the paper and optax, instead of Keras' decoupled decay.
    Variables excluded with `exclude_from_weight_decay()` get no decay, like
    optax's `weight_decay_mask`; optax's `trust_ratio_mask` has no counterpart
    (every variable is adapted). A zero-initialised bias gets ratio 1, so its
    first step is a plain `lr * g`. Sparse (`IndexedSlices`) gradients are
    densified first.

    Args:
        learning_rate: {learning_rate} The global rate, multiplied by the
            trust ratio (about `trust_coefficient` times the relative scale).
            Defaults to `1.0`.
        momentum: Momentum `mu`, a float in [0, 1]. Defaults to `0.9`.
        nesterov: Use Nesterov momentum. Defaults to `False`.
        trust_coefficient: Factor of the trust ratio, a float > 0. Defaults to
            `0.001`.
        epsilon: Constant >= 0 added to the update's norm. Defaults to `0.0`.
        weight_decay: Coupled L2 decay (see above), a float >= 0 or `None`.
            Defaults to `None`.
        {base_args}

    References:
        You, Gitman & Ginsburg, 2017. Large Batch Training of Convolutional
        Networks. https://arxiv.org/abs/1708.03888

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import LARS
        >>> w = keras.Variable([3.0, 4.0])
        >>> LARS(learning_rate=1.0).apply([keras.ops.convert_to_tensor([0.0, 1.0])], [w])
        >>> [round(float(x), 4) for x in w.numpy()]  # ratio 0.001 * 5 / 1
        [3.0, 3.995]
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        learning_rate=1.0,
        momentum=0.9,
        nesterov=False,
        trust_coefficient=0.001,
        epsilon=0.0,
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
        momentum = v.real("momentum", momentum, low=0.0, high=1.0)
        nesterov = v.boolean("nesterov", nesterov)
        trust_coefficient = v.positive("trust_coefficient", trust_coefficient)
        epsilon = v.non_negative("epsilon", epsilon)
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
        self.momentum = momentum
        self.nesterov = nesterov
        self.trust_coefficient = trust_coefficient
        self.epsilon = epsilon

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums = []
        if self.momentum:
            self._momentums = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        update = add_decayed_weights(self, dense_gradient(gradient, variable), variable)
        ratio = trust_ratio(variable, update, self.trust_coefficient, self.epsilon)
        step = ops.multiply(update, ops.negative(ops.multiply(ratio, ops.cast(learning_rate, dtype))))
        if not self.momentum:
            self.assign_add(variable, step)
            return
        buffer = self._momentums[self.variable_index(variable)]
        # optax's order of the sums: bitwise optax's trajectory on JAX.
        apply_momentum(self, variable, buffer, step, self.momentum, self.nesterov, value_first=True)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "trust_coefficient": self.trust_coefficient,
                "epsilon": self.epsilon,
            }
        )
        return config
