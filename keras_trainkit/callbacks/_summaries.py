"""TensorBoard scalar writing shared by the callbacks (Python side, batched)."""

from __future__ import annotations

import itertools
import os
import socket
import time
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
    """Writes many (step, value) scalars at once into one or more run dirs.

    Events are built with tensorboard's own protos (the same records
    `tf.summary.scalar` writes, read by TensorBoard's scalars plugin) and
    written synchronously as TFRecords by TensorFlow's C++ record writer,
    without one TensorFlow op per value: a few microseconds each (tensorboard's
    own `EventFileWriter`, with a background thread and a pure-Python CRC, is
    the fallback without TensorFlow).
    The scalar-plugin metadata goes on each tag's first event, as with
    `tf.summary`.
    """

    def __init__(self, dirs: Iterable[str] = ()):
        self.dirs = list(dirs)
        self._writers: dict[str, Any] = {}
        self._tags: dict[str, set[str]] = {}  # per run dir: tags written so far

    def add_dirs(self, dirs: Iterable[str]) -> None:
        for d in dirs:
            if d not in self.dirs:
                self.dirs.append(d)

    def write(self, scalars: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """`scalars` maps a tag to `(steps, values)`."""
        if not self.dirs or not scalars:
            return
        from tensorboard.compat.proto import (
            event_pb2,
            summary_pb2,
            tensor_pb2,
            tensor_shape_pb2,
            types_pb2,
        )
        from tensorboard.plugins.scalar import metadata

        now = time.time()
        events = []
        shape = tensor_shape_pb2.TensorShapeProto()  # a scalar
        for tag, (steps, values) in scalars.items():
            # Scalar-plugin metadata on a tag's first event in this writer, as
            # tf.summary does; the reader keeps it for the whole tag.
            new_here = [d for d in self.dirs if tag not in self._tags.setdefault(d, set())]
            meta = metadata.create_summary_metadata(display_name=tag, description="") if new_here else None
            for d in new_here:
                self._tags[d].add(tag)
            for step, value in zip(np.asarray(steps).tolist(), np.asarray(values, np.float32).tolist()):
                tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=[value])
                summary_value = summary_pb2.Summary.Value(tag=tag, tensor=tensor, metadata=meta)
                meta = None
                events.append(event_pb2.Event(wall_time=now, step=step, summary=summary_pb2.Summary(value=[summary_value])))
        records = [event.SerializeToString() for event in events]
        for d in self.dirs:
            writer = self._writers.get(d)
            if writer is None:
                writer = self._writers[d] = _open_event_file(d, now)
            for record in records:
                writer.write(record)
            writer.flush()

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


class _TensorBoardFile:
    """tensorboard's EventFileWriter behind the record-writer interface."""

    def __init__(self, directory: str):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._writer = EventFileWriter(directory)

    def write(self, record: bytes) -> None:
        from tensorboard.compat.proto import event_pb2

        self._writer.add_event(event_pb2.Event.FromString(record))

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


_file_counter = itertools.count()


def _open_event_file(directory: str, now: float):
    """A new events file in `directory`, named and headed as TensorFlow's."""
    os.makedirs(directory, exist_ok=True)
    try:
        import tensorflow as tf
    except ImportError:
        return _TensorBoardFile(directory)
    from tensorboard.compat.proto import event_pb2

    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}.trainkit.v2"
    writer = tf.io.TFRecordWriter(os.path.join(directory, name))
    writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    return writer
