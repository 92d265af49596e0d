"""Keras Tuner plugin: a HyperModel factory and a genetic search."""

from keras_trainkit.tuning._genetic import GeneticOracle, GeneticSearch

__all__ = ["GeneticOracle", "GeneticSearch"]
