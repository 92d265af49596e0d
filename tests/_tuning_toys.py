"""Synthetic objectives and a training-free tuner for oracle tests and benchmarks."""

import math

import keras_tuner
import numpy as np

BRANIN_OPT = 0.397887
HARTMANN6_OPT = -3.32237

_H6_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14],
                  [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_H6_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                         [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
_H6_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x):
    x = np.asarray(x, dtype=float)
    return float(-np.sum(_H6_ALPHA * np.exp(-np.sum(_H6_A * (x - _H6_P) ** 2, axis=1))))


def branin(x1, x2):
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s


def hartmann6_space():
    hp = keras_tuner.HyperParameters()
    for i in range(6):
        hp.Float(f"x{i}", 0.0, 1.0)
    return hp


def branin_space():
    hp = keras_tuner.HyperParameters()
    hp.Float("x1", -5.0, 10.0)
    hp.Float("x2", 0.0, 15.0)
    return hp


def hartmann6_objective(values):
    return hartmann6([values[f"x{i}"] for i in range(6)])


def branin_objective(values):
    return branin(values["x1"], values["x2"])


class FunctionTuner(keras_tuner.Tuner):
    """Scores a trial with `fn(values)`: no model, no training."""

    def __init__(self, fn, **kwargs):
        self.fn = fn
        super().__init__(hypermodel=None, **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        return {"score": self.fn(trial.hyperparameters.values)}

    def save_model(self, trial_id, model, step=0):
        pass
