"""Keras Tuner plugin: a HyperModel factory and a genetic search."""

from keras_trainkit.tuning._genetic import GeneticOracle, GeneticSearch
from keras_trainkit.tuning._hypermodel import (
    OPTIMIZERS,
    TrainkitHyperModel,
    default_search_space,
    make_hypermodel,
    regularizer_from,
)

__all__ = [
    "OPTIMIZERS",
    "GeneticOracle",
    "GeneticSearch",
    "OptunaOracle",
    "OptunaSearch",
    "ParetoTrial",
    "TrainkitHyperModel",
    "default_search_space",
    "make_hypermodel",
    "regularizer_from",
]


# Optuna is optional: these load on first access, so `import keras_trainkit`
# never imports optuna (creating an OptunaOracle without it raises ImportError).
_LAZY = {"OptunaOracle": "_optuna", "OptunaSearch": "_optuna", "ParetoTrial": "_optuna"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"keras_trainkit.tuning.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'keras_trainkit.tuning' has no attribute {name!r}")
