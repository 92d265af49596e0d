"""NovoGrad: momentum of layer-wise normalised gradients."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    add_decayed_weights,
    dense_gradient,
    moving_average,
    scale_by_root,
    squared_l2_norm,
    update_trace,
)


@register
@document
class NovoGrad(TrainkitOptimizer):
    """NovoGrad: Adam-like steps with one second moment per variable (layer).

    Matches `optax.novograd` (same defaults and trajectory). Update rule at
    update `t` (from 1) for a variable `w` with gradient `g` and learning rate
    `lr`; `s` is a scalar per variable::

        s <- ||g||**2                                  at t = 1
        s <- beta_2 * s + (1 - beta_2) * ||g||**2      after
        m <- beta_1 * m + g / (sqrt(s + epsilon_root) + epsilon) + weight_decay * w
        w <- w - lr * m

    `weight_decay` here is NovoGrad's own, coupled decay inside the momentum,
    as in the paper and optax, instead of Keras' decoupled decay; variables
    excluded with `exclude_from_weight_decay()` get none. Sparse
    (`IndexedSlices`) gradients are densified first.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        beta_1: Momentum `beta_1`, a float in [0, 1). Defaults to `0.9`.
        beta_2: Decay of the layer-wise second moment, a float in [0, 1).
            Defaults to `0.25`.
        epsilon: Constant > 0 added to the root of `s`. Defaults to `1e-6`.
        epsilon_root: Constant >= 0 added to `s` inside the root. Defaults to
            `0.0`.
        weight_decay: Coupled decay (see above), a float >= 0 or `None`.
            Defaults to `None`.
        {base_args}

    References:
        Ginsburg et al., 2019. Stochastic Gradient Methods with Layer-wise
        Adaptive Moments for Training of Deep Networks.
        https://arxiv.org/abs/1905.11286

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import NovoGrad
        >>> w = keras.Variable([1.0, 1.0])
        >>> NovoGrad(learning_rate=0.1).apply([keras.ops.convert_to_tensor([3.0, 4.0])], [w])
        >>> [round(float(x), 4) for x in w.numpy()]  # g / ||g|| = [0.6, 0.8]
        [0.94, 0.92]
    """

    decoupled_weight_decay = False

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.25,
        epsilon=1e-6,
        epsilon_root=0.0,
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

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._momentums = self.add_optimizer_variables(variables, "momentum")
        self._second_moments = [
            None
            if getattr(variable, "overwrite_with_gradient", False)
            else self.add_variable(
                shape=(),
                dtype=variable.dtype,
                name=f"{getattr(variable, 'path', variable.name).replace('/', '_')}_second_moment",
            )
            for variable in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        gradient = dense_gradient(gradient, variable)
        index = self.variable_index(variable)
        s = self._second_moments[index]
        squared_norm = squared_l2_norm(gradient)
        new_s = ops.where(
            ops.equal(self.iterations, 0),
            squared_norm,
            moving_average(s, squared_norm, self.beta_2),
        )
        self.assign(s, new_s)
        # One scalar division per variable, then a multiplication per element.
        inverse_norm = scale_by_root(1.0, new_s, self.epsilon, epsilon_root=self.epsilon_root)
        normalised = add_decayed_weights(self, ops.multiply(gradient, inverse_norm), variable)
        m = update_trace(self, self._momentums[index], normalised, self.beta_1)
        self.assign_sub(variable, ops.multiply(m, ops.cast(learning_rate, variable.dtype)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "beta_1": self.beta_1,
                "beta_2": self.beta_2,
                "epsilon": self.epsilon,
                "epsilon_root": self.epsilon_root,
            }
        )
        return config
