"""The optimizers `make_hypermodel` can tune: a read-only registry and `register_optimizer`."""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

import keras
import keras_tuner

from keras_trainkit import optimizers as tk_optimizers
from keras_trainkit.tuning._errors import fatal

__all__ = ["OPTIMIZERS", "register_optimizer"]

OptimizerFactory = Callable[[float, keras_tuner.HyperParameters], keras.optimizers.Optimizer]

# name -> factory(learning_rate, hp) building the optimizer.
_REGISTRY: dict[str, OptimizerFactory] = {
    "adam": lambda lr, hp: keras.optimizers.Adam(lr),
    "adamw": lambda lr, hp: keras.optimizers.AdamW(lr),
    "sgd": lambda lr, hp: keras.optimizers.SGD(lr, momentum=hp.get("sgd_momentum")),
    "rmsprop": lambda lr, hp: keras.optimizers.RMSprop(lr),
    "adagrad": lambda lr, hp: keras.optimizers.Adagrad(lr),
    "nadam": lambda lr, hp: keras.optimizers.Nadam(lr),
    "lion": lambda lr, hp: keras.optimizers.Lion(lr),
    "radam": lambda lr, hp: tk_optimizers.RAdam(lr),
    "adabelief": lambda lr, hp: tk_optimizers.AdaBelief(lr),
    "yogi": lambda lr, hp: tk_optimizers.Yogi(lr),
    "adan": lambda lr, hp: tk_optimizers.Adan(lr),
    "lars": lambda lr, hp: tk_optimizers.LARS(lr),
    "novograd": lambda lr, hp: tk_optimizers.NovoGrad(lr),
    "lookahead_adam": lambda lr, hp: tk_optimizers.Lookahead(keras.optimizers.Adam(lr)),
}

#: The optimizers `make_hypermodel` can choose from: a read-only mapping
#: `name -> factory(learning_rate, hp)`. Add one with `register_optimizer`.
OPTIMIZERS: Mapping[str, OptimizerFactory] = types.MappingProxyType(_REGISTRY)


def register_optimizer(name: str, factory: OptimizerFactory, *, overwrite: bool = False) -> None:
    """Makes an optimizer available to `make_hypermodel`'s `optimizer` choice.

    The factory is called once per trial with the trial's learning rate and
    its `keras_tuner.HyperParameters` (read your own hyperparameters with
    `hp.get(...)`; declare them with `search_space={name: (kind, kwargs)}` so
    every tuner sees them), and must return a new
    `keras.optimizers.Optimizer`; `build()` checks that it does. Register at
    import time of your search script: each process of a distributed search
    builds models from its own registry.

    Args:
        name: The value of the `optimizer` hyperparameter, a non-empty string
            not registered yet.
        factory: `factory(learning_rate, hp) -> keras.optimizers.Optimizer`.
        overwrite: Replace an optimizer registered under `name` (the built-in
            ones included). Defaults to `False`.

    Raises:
        keras_tuner.errors.FatalValueError: (a `ValueError`) for an empty or
            non-string name, a name already registered without
            `overwrite=True`, or a factory that is not callable with
            `(learning_rate, hp)`.

    Examples:
        >>> register_optimizer("sgd_nesterov", lambda lr, hp: keras.optimizers.SGD(
        ...     lr, momentum=0.9, nesterov=True))
        >>> hm = make_hypermodel((64,), 10, search_space={"optimizer": ["adam", "sgd_nesterov"]})
    """
    with fatal():
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"Argument `name` must be a non-empty string. Received: name={name!r}")
        if not isinstance(overwrite, bool):
            raise ValueError(f"Argument `overwrite` must be a bool. Received: overwrite={overwrite!r}")
        if name in _REGISTRY and not overwrite:
            raise ValueError(
                f"Argument `name`: an optimizer {name!r} is already registered; pass "
                f"overwrite=True to replace it. Received: name={name!r}")
        if not callable(factory):
            raise ValueError(
                f"Argument `factory` must be callable(learning_rate, hp). Received: factory={factory!r}")
        try:
            inspect.signature(factory).bind(1e-3, keras_tuner.HyperParameters())
        except TypeError as e:
            raise ValueError(
                f"Argument `factory` must accept (learning_rate, hp): {e}. "
                f"Received: factory={factory!r}") from None
        except ValueError:  # no introspectable signature (some builtins): accepted
            pass
    _REGISTRY[name] = factory


def build_optimizer(name: str, learning_rate: float, hp: Any) -> keras.optimizers.Optimizer:
    """The trial's optimizer; raises `FatalValueError` if the factory misbehaves."""
    if name not in _REGISTRY:
        raise keras_tuner.errors.FatalValueError(
            f"Hyperparameter 'optimizer' is {name!r}, which is not registered; registered: "
            f"{sorted(_REGISTRY)} (see register_optimizer).")
    optimizer = _REGISTRY[name](learning_rate, hp)
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise keras_tuner.errors.FatalValueError(
            f"The factory registered for optimizer {name!r} must return a "
            f"keras.optimizers.Optimizer. Received: {optimizer!r}")
    return optimizer
