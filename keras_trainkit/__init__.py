"""keras_trainkit: training recipes for Keras 3 as tested, in-graph tools."""

from keras_trainkit import callbacks, schedules
from keras_trainkit._version import __version__

__all__ = ["__version__", "callbacks", "schedules"]
