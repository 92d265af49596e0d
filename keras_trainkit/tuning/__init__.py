"""Keras Tuner plugin: a HyperModel factory, a genetic search, a resumable grid search,
crash-safe tuner/oracle files and objective-direction inference."""

from keras_trainkit.tuning._atomic import AtomicOracleMixin, make_oracle_atomic
from keras_trainkit.tuning._errors import SearchFailedError
from keras_trainkit.tuning._genetic import GeneticOracle, GeneticSearch
from keras_trainkit.tuning._grid import GridSearch, GridSearchOracle
from keras_trainkit.tuning._hypermodel import (
    TrainkitHyperModel,
    default_search_space,
    make_hypermodel,
    regularizer_from,
)
from keras_trainkit.tuning._objective import make_objective, metric_direction
from keras_trainkit.tuning._registry import OPTIMIZERS, register_optimizer
from keras_trainkit.tuning._tuner import TrainkitTunerMixin

__all__ = [
    "OPTIMIZERS",
    "AtomicOracleMixin",
    "GeneticOracle",
    "GeneticSearch",
    "GridSearch",
    "GridSearchOracle",
    "OptunaOracle",
    "OptunaSearch",
    "ParetoTrial",
    "SearchFailedError",
    "TrainkitHyperModel",
    "TrainkitTunerMixin",
    "default_search_space",
    "make_hypermodel",
    "make_objective",
    "make_oracle_atomic",
    "metric_direction",
    "register_optimizer",
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
