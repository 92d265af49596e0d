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
    "TrainkitHyperModel",
    "default_search_space",
    "make_hypermodel",
    "regularizer_from",
]
