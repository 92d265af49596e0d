"""Cosine decay with an optional Keras-style warm-up and warm restarts."""

from __future__ import annotations

import math

import keras
from keras import ops

from keras_trainkit import _validation as v
from keras_trainkit.schedules._base import Schedule
from keras_trainkit.schedules._warmup import WarmUp

_register = keras.saving.register_keras_serializable(package="keras_trainkit")


def _restart_position(fraction, t_mul):
    """Index of the current cycle and the fraction done within it."""
    if t_mul == 1.0:
        i_restart = ops.floor(fraction)
        return i_restart, fraction - i_restart
    i_restart = ops.floor(ops.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
    sum_r = (1.0 - ops.power(t_mul, i_restart)) / (1.0 - t_mul)
    return i_restart, (fraction - sum_r) / ops.power(t_mul, i_restart)


@_register
class CosineDecay(Schedule):
    """Cosine decay to a floor, with optional warm-up and warm restarts.

    Without restarts (Keras' `CosineDecay`, same arguments and values)::

        lr(t) = peak * ((1 - alpha) * (1 + cos(pi * min(t, T) / T)) / 2 + alpha)

    where `T = decay_steps` and `peak = initial_learning_rate`, or
    `warmup_target` when that is set: then the rate first rises linearly from
    `initial_learning_rate` to `warmup_target` over `warmup_steps` and the decay
    starts after it, so the run lasts `warmup_steps + decay_steps` updates and
    then holds at `alpha * peak`.

    With `restarts=True` (SGDR; Keras' `CosineDecayRestarts`, which is also
    available under that name) cycle `i` lasts `T * t_mul**i` updates and
    starts at `peak * m_mul**i`; the floor stays `alpha * peak`.

    Args:
        initial_learning_rate: Rate at update 0, a finite float > 0 (>= 0 when
            `warmup_target` is set).
        decay_steps: Length of the (first) decay in updates, a number > 0.
        alpha: Floor as a fraction of the peak, in [0, 1]. Defaults to `0.0`.
        name: Defaults to `"CosineDecay"`.
        warmup_target: Peak reached by a linear warm-up, or `None` for no
            warm-up. Defaults to `None`.
        warmup_steps: Warm-up length, an int >= 0. Defaults to `0`.
        restarts: Restart the cosine every cycle. Defaults to `False`.
        t_mul: Cycle-length multiplier, >= 1. Defaults to `2.0`.
        m_mul: Cycle-peak multiplier, in [0, 1]. Defaults to `1.0`.

    References:
        Loshchilov & Hutter, 2017. SGDR: Stochastic Gradient Descent with Warm
        Restarts. https://arxiv.org/abs/1608.03983
    """

    def __init__(self, initial_learning_rate: float, decay_steps: float, alpha: float = 0.0,
                 name: str = "CosineDecay", warmup_target: float | None = None,
                 warmup_steps: int = 0, restarts: bool = False, t_mul: float = 2.0,
                 m_mul: float = 1.0):
        super().__init__()
        if warmup_target is None:
            self.initial_learning_rate = v.positive("initial_learning_rate", initial_learning_rate)
            self.warmup_target = None
        else:
            self.initial_learning_rate = v.non_negative("initial_learning_rate", initial_learning_rate)
            self.warmup_target = v.positive("warmup_target", warmup_target)
        self.decay_steps = v.positive("decay_steps", decay_steps)
        self.alpha = v.real("alpha", alpha, low=0.0, high=1.0)
        self.warmup_steps = v.integer("warmup_steps", warmup_steps, low=0)
        self.restarts = v.boolean("restarts", restarts)
        self.t_mul = v.real("t_mul", t_mul, low=1.0)
        self.m_mul = v.real("m_mul", m_mul, low=0.0, high=1.0)
        self.name = name

    def _decay(self, step, peak):
        fraction = step / self.decay_steps
        if self.restarts:
            i_restart, fraction = _restart_position(fraction, self.t_mul)
            cosine = 0.5 * ops.power(self.m_mul, i_restart) * (1.0 + ops.cos(math.pi * fraction))
        else:
            cosine = 0.5 * (1.0 + ops.cos(math.pi * ops.minimum(fraction, 1.0)))
        return peak * ((1.0 - self.alpha) * cosine + self.alpha)

    def compute(self, step):
        if self.warmup_target is None:
            return self._decay(step, self.initial_learning_rate)
        decay = _CosineTail(self)
        return WarmUp(decay, self.warmup_steps, self.initial_learning_rate).compute(step)

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": self.decay_steps,
            "alpha": self.alpha,
            "name": self.name,
            "warmup_target": self.warmup_target,
            "warmup_steps": self.warmup_steps,
            "restarts": self.restarts,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
        }


class _CosineTail(Schedule):
    """The decay part of a warmed-up CosineDecay, starting at `warmup_target`."""

    def __init__(self, parent: CosineDecay):
        super().__init__()
        self.parent = parent

    def compute(self, step):
        return self.parent._decay(step, self.parent.warmup_target)


@_register
class CosineDecayRestarts(CosineDecay):
    """Keras' `CosineDecayRestarts` signature for `CosineDecay(restarts=True)`.

    Args:
        initial_learning_rate: Peak of the first cycle, a finite float > 0.
        first_decay_steps: Length of the first cycle, a number > 0.
        t_mul: Cycle-length multiplier, >= 1. Defaults to `2.0`.
        m_mul: Cycle-peak multiplier, in [0, 1]. Defaults to `1.0`.
        alpha: Floor as a fraction of `initial_learning_rate`. Defaults to `0.0`.
        name: Defaults to `"SGDRDecay"`.
    """

    def __init__(self, initial_learning_rate: float, first_decay_steps: float,
                 t_mul: float = 2.0, m_mul: float = 1.0, alpha: float = 0.0,
                 name: str = "SGDRDecay"):
        try:
            super().__init__(initial_learning_rate, first_decay_steps, alpha=alpha, name=name,
                             restarts=True, t_mul=t_mul, m_mul=m_mul)
        except ValueError as e:
            raise ValueError(str(e).replace("decay_steps", "first_decay_steps")) from None

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "first_decay_steps": self.decay_steps,
            "t_mul": self.t_mul,
            "m_mul": self.m_mul,
            "alpha": self.alpha,
            "name": self.name,
        }
