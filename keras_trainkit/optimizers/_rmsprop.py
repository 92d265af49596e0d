"""RMSprop, plain or centered, with optional momentum."""

from __future__ import annotations

from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.optimizers._base import TrainkitOptimizer, beta, document, register
from keras_trainkit.optimizers._blocks import (
    moving_average,
    scale_by_root,
    update_trace,
)


@register
@document
class RMSprop(TrainkitOptimizer):
    """RMSprop: divide the gradient by a running root mean square of gradients.

    A drop-in for `keras.optimizers.RMSprop`: same arguments, defaults and
    trajectory. Update rule for a variable `w` with gradient `g`, learning
    rate `lr`, decay `rho` and momentum `mu`::

        s <- rho * s + (1 - rho) * g**2
        centered:  a <- rho * a + (1 - rho) * g;   d = s - a**2 + epsilon
        otherwise: d = s + epsilon
        u = lr * g / sqrt(d)
        mu > 0:    m <- mu * m + u;   w <- w - m
        otherwise: w <- w - u

    With `IndexedSlices` gradients (an `Embedding` on TensorFlow) a row
    repeated in the batch contributes the sum of its squared slices to `s`, as
    in Keras.

    Args:
        learning_rate: {learning_rate} Defaults to `0.001`.
        rho: Decay of the mean square, a float in [0, 1). Defaults to `0.9`.
        momentum: Momentum `mu`, a float in [0, 1]. Defaults to `0.0`.
        epsilon: Small constant > 0 inside the square root. Defaults to `1e-7`.
        centered: Divide by an estimate of the variance instead of the
            uncentered second moment. Defaults to `False`.
        {weight_decay}
        {base_args}

    References:
        Hinton, Srivastava & Swersky, 2012. Neural Networks for Machine
        Learning, lecture 6e.
        https://www.cs.toronto.edu/~tijmen/csc321/slides/lecture_slides_lec6.pdf
        Graves, 2013. Generating Sequences With Recurrent Neural Networks
        (centered variant). https://arxiv.org/abs/1308.0850

    Examples:
        >>> import keras
        >>> from keras_trainkit.optimizers import RMSprop
        >>> w = keras.Variable([1.0])
        >>> RMSprop(learning_rate=0.1, rho=0.0).apply(
        ...     [keras.ops.convert_to_tensor([3.0])], [w])
        >>> round(float(w.numpy()[0]), 4)
        0.9
    """

    def __init__(
        self,
        learning_rate=0.001,
        rho=0.9,
        momentum=0.0,
        epsilon=1e-7,
        centered=False,
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
        rho = beta("rho", rho)
        momentum = v.real("momentum", momentum, low=0.0, high=1.0)
        epsilon = v.positive("epsilon", epsilon)
        centered = v.boolean("centered", centered)
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
        self.rho = rho
        self.momentum = momentum
        self.epsilon = epsilon
        self.centered = centered

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._mean_squares = self.add_optimizer_variables(variables, "velocity")
        self._momentums = []
        if self.momentum > 0:
            self._momentums = self.add_optimizer_variables(variables, "momentum")
        self._mean_gradients = []
        if self.centered:
            self._mean_gradients = self.add_optimizer_variables(variables, "average_gradient")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        index = self.variable_index(variable)
        rho = self.rho
        mean_square = self._mean_squares[index]
        # Squared before merging repeated IndexedSlices rows, as Keras does.
        self.assign(mean_square, moving_average(mean_square, ops.square(gradient), rho))
        if self.centered:
            mean_gradient = self._mean_gradients[index]
            self.assign(mean_gradient, moving_average(mean_gradient, gradient, rho))
            variance = mean_square - ops.square(mean_gradient)
        else:
            variance = mean_square
        increment = scale_by_root(
            ops.multiply(lr, gradient), variance, epsilon=0.0, epsilon_root=self.epsilon
        )
        if self.momentum > 0:
            momentum = update_trace(self, self._momentums[index], increment, self.momentum)
            self.assign_sub(variable, momentum)
        else:
            self.assign_sub(variable, increment)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rho": self.rho,
                "momentum": self.momentum,
                "epsilon": self.epsilon,
                "centered": self.centered,
            }
        )
        return config
