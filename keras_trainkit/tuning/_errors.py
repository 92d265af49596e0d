"""Configuration errors in the tuning package are Keras Tuner's FatalValueError."""

from __future__ import annotations

import contextlib

from keras_tuner.errors import FatalValueError


@contextlib.contextmanager
def fatal():
    """Re-raises a ValueError as `keras_tuner.errors.FatalValueError` (a ValueError)."""
    try:
        yield
    except FatalValueError:
        raise
    except ValueError as e:
        raise FatalValueError(str(e)) from None
