"""Errors of the tuning package.

Configuration errors are Keras Tuner's `FatalValueError` (a `ValueError`):
Keras Tuner lets them stop a search at once instead of failing trial after
trial.
"""

from __future__ import annotations

import contextlib

from keras_tuner.errors import FatalValueError

__all__ = ["SearchFailedError", "fatal"]


@contextlib.contextmanager
def fatal():
    """Re-raises a ValueError as `keras_tuner.errors.FatalValueError` (a ValueError)."""
    try:
        yield
    except FatalValueError:
        raise
    except ValueError as e:
        raise FatalValueError(str(e)) from None


class SearchFailedError(RuntimeError):
    """Every trial of a search failed; the message holds the first trial's error.

    Raised by keras_trainkit's tuners (`GeneticSearch`, `GridSearch`, any
    tuner with `TrainkitTunerMixin`) at the end of a search, or in place of
    Keras Tuner's "Number of consecutive failures exceeded the limit" error
    when no trial has completed, whatever `max_trials` is.

    Attributes:
        trial_id: The first failed trial's id.
        trial_message: Its error (Keras Tuner records the traceback text).
    """

    def __init__(self, message: str, trial_id: str | None = None, trial_message: str = ""):
        super().__init__(message)
        self.trial_id = trial_id
        self.trial_message = trial_message
