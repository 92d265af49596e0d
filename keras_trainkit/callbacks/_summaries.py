"""TensorBoard scalar writing shared by the callbacks (Python side, batched)."""

from __future__ import annotations

import itertools
import os
import socket
import struct
import sys
import time
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from keras_trainkit import _keras_hooks as hooks


def tensorboard_dirs(session: Any, log_dir: str | None) -> list[str]:
    """Our own log dir's `train` run, and that of any keras TensorBoard in the
    fit of `session` (a `_session.Session`, or `None`)."""
    dirs = []
    if log_dir is not None:
        dirs.append(os.path.join(os.fspath(log_dir), "train"))
    for sibling in session.callbacks if session is not None else ():
        if isinstance(sibling, keras.callbacks.TensorBoard):
            dirs.append(hooks.tensorboard_train_dir(sibling))
    return list(dict.fromkeys(dirs))


class ScalarWriter:
    """Writes many (step, value) scalars at once into one or more run dirs.

    Events are built with tensorboard's own protos (the same records
    `tf.summary.scalar` writes, read by TensorBoard's scalars plugin) and
    written synchronously as TFRecords by TensorFlow's C++ record writer,
    without one TensorFlow op per value: a few microseconds each (tensorboard's
    own record writer, with a pure-Python CRC of about 40 us a record, is used
    when TensorFlow is not imported: the jax and torch backends).
    The scalar-plugin metadata goes on each tag's first event, as with
    `tf.summary`. All writers of the process share one events file per run
    directory while any of them is open. The records are the bytes protobuf would serialize (see
    `scalar_event`; tested against it), built without a message object each.
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
        from tensorboard.plugins.scalar import metadata

        now = time.time()
        records = []
        for tag, (steps, values) in scalars.items():
            # Scalar-plugin metadata on a tag's first event in this writer, as
            # tf.summary does; the reader keeps it for the whole tag.
            new_here = [d for d in self.dirs if tag not in self._tags.setdefault(d, set())]
            meta = b""
            if new_here:
                meta = metadata.create_summary_metadata(display_name=tag, description="").SerializeToString()
            for d in new_here:
                self._tags[d].add(tag)
            records += scalar_events(now, steps, tag, values, meta)
        for d in self.dirs:
            writer = self._writers.get(d)
            if writer is None:
                writer = self._writers[d] = _acquire_event_file(d, now)
            for record in records:
                writer.write(record)
            writer.flush()

    def close(self) -> None:
        for d in self._writers:
            _release_event_file(d)
        self._writers.clear()


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 two's complement, as protobuf encodes negatives
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


# TensorProto{dtype: DT_FLOAT (1), tensor_shape: {} (a scalar), float_val: [packed]}:
# the value's 4 little-endian bytes follow.
_FLOAT_SCALAR = b"\x08\x01" + b"\x12\x00" + b"\x2a\x04"


def scalar_event(wall_time: float, step: int, tag: str, value: float, metadata: bytes = b"") -> bytes:
    """`Event(wall_time, step, summary=Summary(value=[Summary.Value(tag, tensor=<float32
    scalar>, metadata)])).SerializeToString()`, byte for byte (fields in number
    order; proto3 leaves zero scalars out)."""
    value_bytes = _field(1, tag.encode()) + _field(8, _FLOAT_SCALAR + struct.pack("<f", value))
    if metadata:
        value_bytes += _field(9, metadata)
    event = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
    if step:
        event += b"\x10" + _varint(step)
    return event + _field(5, _field(1, value_bytes))


def scalar_events(wall_time: float, steps: np.ndarray, tag: str, values: np.ndarray,
                  metadata: bytes = b"") -> list[bytes]:
    """`[scalar_event(wall_time, step, tag, value, metadata if first else b"")
    for step, value in zip(steps, values)]`, about a microsecond each: the
    bytes around the step and the value are the same for every event."""
    steps = np.asarray(steps, dtype=np.int64).tolist()
    raw = np.asarray(values, dtype="<f4").tobytes()
    if not steps:
        return []
    records = [scalar_event(wall_time, steps[0], tag, float(np.frombuffer(raw[:4], "<f4")[0]), metadata)]
    if len(steps) == 1:
        return records
    value_len = len(_field(1, tag.encode())) + 2 + len(_FLOAT_SCALAR) + 4
    summary = _field(1, b"\0" * value_len)  # Summary{value: [...]}: only its length matters here
    head = b"\x09" + struct.pack("<d", wall_time) if wall_time else b""
    middle = b"\x2a" + _varint(len(summary)) + summary[:-value_len] + _field(1, tag.encode()) + b"\x42" + _varint(
        len(_FLOAT_SCALAR) + 4) + _FLOAT_SCALAR
    step_head = head + b"\x10"
    for i, step in enumerate(steps[1:], start=1):
        value = raw[4 * i:4 * i + 4]
        if 0 < step < 0x80:
            records.append(step_head + bytes((step,)) + middle + value)
        elif step:
            records.append(step_head + _varint(step) + middle + value)
        else:
            records.append(head + middle + value)
    return records


class _TensorBoardFile:
    """A TFRecord file written with tensorboard's own record writer (its
    pure-Python CRC), never importing TensorFlow: the record-writer interface
    of `tf.io.TFRecordWriter` (`write(bytes)`, `flush`, `close`)."""

    def __init__(self, path: str):
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._writer = RecordWriter(open(path, "wb"))  # noqa: SIM115 (closed by close())

    def write(self, record: bytes) -> None:
        self._writer.write(record)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


_file_counter = itertools.count()

# One events file per run directory for all of this process's writers (the LR
# callbacks, GradientNormLogger, our TensorBoard's epoch scalars), shared while
# any of them is open: one keras_trainkit file per run (next to the one of
# Keras' own TensorBoard writer), not one per callback. TensorBoard's default
# loader reads every file of a run; its legacy one follows only the newest live.
_shared_files: dict[str, list] = {}  # absolute dir -> [record writer, number of users]


def _acquire_event_file(directory: str, now: float):
    key = os.path.abspath(directory)
    entry = _shared_files.get(key)
    if entry is None:
        entry = _shared_files[key] = [_open_event_file(directory, now), 0]
    entry[1] += 1
    return entry[0]


def _release_event_file(directory: str) -> None:
    key = os.path.abspath(directory)
    entry = _shared_files.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        entry[0].close()
        del _shared_files[key]


def _open_event_file(directory: str, now: float):
    """A new events file in `directory`, named and headed as TensorFlow's.

    TensorFlow's record writer when TensorFlow is already imported (the
    tensorflow backend, or tf.data in use); otherwise tensorboard's own record
    writer, never importing TensorFlow (seconds and hundreds of MB on the jax
    and torch backends), which need not be installed.
    """
    os.makedirs(directory, exist_ok=True)
    from tensorboard.compat.proto import event_pb2

    name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}.trainkit.v2"
    path = os.path.join(directory, name)
    writer = None
    if sys.modules.get("tensorflow") is not None:
        try:
            import tensorflow as tf

            writer = tf.io.TFRecordWriter(path)
        except ImportError:
            pass
    if writer is None:
        writer = _TensorBoardFile(path)
    writer.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
    return writer
