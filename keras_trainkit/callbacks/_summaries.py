"""TensorBoard scalar writing shared by the callbacks (Python side, batched)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from keras_trainkit.callbacks import _train_hooks


def tensorboard_dirs(callback: Any, log_dir: str | None) -> list[str]:
    """Our own log dir's `train` run, and that of any keras TensorBoard sibling."""
    dirs = []
    if log_dir is not None:
        dirs.append(os.path.join(os.fspath(log_dir), "train"))
    for sibling in _train_hooks.sibling_callbacks(callback):
        if isinstance(sibling, keras.callbacks.TensorBoard):
            dirs.append(getattr(sibling, "_train_dir", os.path.join(sibling.log_dir, "train")))
    return list(dict.fromkeys(dirs))


class ScalarWriter:
    """Writes many (step, value) scalars at once into one or more run dirs."""

    def __init__(self, dirs: Iterable[str] = ()):
        self.dirs = list(dirs)
        self._writers: dict[str, Any] = {}

    def add_dirs(self, dirs: Iterable[str]) -> None:
        for d in dirs:
            if d not in self.dirs:
                self.dirs.append(d)

    def write(self, scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """`scalars` maps a tag to `(steps, values)`."""
        if not self.dirs or not scalars:
            return
        import tensorflow as tf

        for d in self.dirs:
            writer = self._writers.get(d)
            if writer is None:
                writer = self._writers[d] = tf.summary.create_file_writer(d)
            with writer.as_default():
                for tag, (steps, values) in scalars.items():
                    for step, value in zip(steps, values):
                        tf.summary.scalar(tag, float(value), step=int(step))
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
