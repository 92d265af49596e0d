"""Stochastic gradient descent with optional (Nesterov) momentum."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, document, register
from keras_trainkit.optimizers._blocks import apply_momentum


@register
@document
class SGD(TrainkitOptimizer):
    """Gradient descent, with optional momentum or Nesterov momentum.

    A drop-in for `keras.optimizers.SGD`: same arguments, defaults and
    trajectory. Update rule for a variable `w` with gradient `g`, learning
    rate `lr` and momentum `mu`::

        plain (mu = 0):  w <- w - lr * g
        momentum:        v <- mu * v - lr * g;   w <- w + v
        Nesterov:        v <- mu * v - lr * g;   w <- w + mu * v - lr * g

    With `IndexedSlices` gradients (an `Embedding` on TensorFlow) plain SGD
    only touches the rows present; with momentum the gradient is densified,
    as in Keras.

    Args:
        learning_rate: {learning_rate} Defaults to `0.01`.
        momentum: Momentum `mu`, a float in [0, 1]; 0 is plain gradient
            descent. Defaults to `0.0`.
        nesterov: Use Nesterov momentum. Defaults to `False`.
        {weight_decay}
        {base_args}

    References:
        Robbins & Monro, 1951. A Stochastic Approximation Method.
        https://doi.org/10.1214/aoms/1177729586
        Polyak, 1964. Some methods of speeding up the convergence of iteration
        methods. https://doi.org/10.1016/0041-5553(64)90137-5
        Sutskever et al., 2013. On the importance of initialization and
        momentum in deep learning. https://proceedings.mlr.press/v28/sutskever13.html

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import SGD
        >>> w = keras.Variable([1.0, 2.0])
        >>> opt = SGD(learning_rate=0.1, momentum=0.9, nesterov=True)
        >>> opt.apply([keras.ops.convert_to_tensor([1.0, 1.0])], [w])
        >>> [round(float(x), 3) for x in w.numpy()]
        [0.81, 1.81]
    """

    def __init__(
        self,
        learning_rate=0.01,
        momentum=0.0,
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
        momentum = v.real("momentum", momentum, low=0.0, high=1.0)
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
        self.momentum = momentum
        self.nesterov = nesterov

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._velocities = []
        if self.momentum:
            self._velocities = self.add_optimizer_variables(variables, "momentum")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if not self.momentum:
            # Kept as IndexedSlices when the gradient is sparse: a row update.
            self.assign_sub(variable, ops.multiply(gradient, lr))
            return
        velocity = self._velocities[self.variable_index(variable)]
        mu = ops.cast(self.momentum, variable.dtype)
        # Keras' v <- mu * v - lr * g, with the step's sign carried by the rate.
        apply_momentum(self, variable, velocity, ops.multiply(gradient, ops.negative(lr)), mu, self.nesterov)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config
