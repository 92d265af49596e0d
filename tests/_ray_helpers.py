"""Helpers of tests/test_ray_tune.py: a session standing in for Ray's, and
callbacks that record per-update learning rates or kill the worker process.

Ray's workers unpickle these callbacks, so the test module registers this
module to be pickled by value (`ray.cloudpickle.register_pickle_by_value`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time

import keras
import numpy as np


class FakeSession:
    """Ray's trial session without Ray: keeps every reported checkpoint."""

    def __init__(self, root, restore_from=None):
        self.root = str(root)
        self.restore_from = restore_from
        self.reports: list[tuple[dict, str]] = []
        os.makedirs(self.root, exist_ok=True)

    @contextlib.contextmanager
    def restored(self):
        yield self.restore_from

    def report(self, metrics, directory):
        kept = os.path.join(self.root, f"checkpoint_{len(self.reports):06d}")
        shutil.copytree(directory, kept)
        self.reports.append((dict(metrics), kept))

    def work_dir(self):
        return tempfile.mkdtemp(prefix="work-", dir=self.root)


class RateRecorder(keras.callbacks.Callback):
    """Appends `{trial, t: update count, lr: rate of this update, pid}` before every
    update (unless `per_update=False`), and `{trial, epoch: epochs completed,
    val_accuracy, time, pid}` at every epoch end, to a JSON-lines file per process
    (concurrent trials never interleave). Also used by the Ray suite of
    benchmarks/search_efficiency.py to count epochs."""

    def __init__(self, directory, tag=None, per_update=True):
        super().__init__()
        self.directory = str(directory)
        self.tag = tag
        self.per_update = per_update

    def _write(self, record):
        tag, node = self.tag, None
        if tag is None:
            try:
                import ray
                from ray import tune

                tag = tune.get_context().get_trial_id()
                node = ray.get_runtime_context().get_node_id()
            except Exception:  # noqa: BLE001 - outside Ray
                tag = "local"
        record = {"trial": tag, **record, "pid": os.getpid(), "node": node}
        with open(os.path.join(self.directory, f"rates-{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def on_train_batch_begin(self, batch, logs=None):
        if not self.per_update:
            return
        optimizer = self.model.optimizer
        self._write({"t": int(keras.ops.convert_to_numpy(optimizer.iterations)),
                     "lr": float(keras.ops.convert_to_numpy(optimizer.learning_rate))})

    def on_epoch_end(self, epoch, logs=None):
        self._write({"epoch": epoch + 1, "val_accuracy": (logs or {}).get("val_accuracy"), "time": time.time()})


def _records(directory):
    out = []
    for name in sorted(os.listdir(directory)):
        if name.startswith("rates-"):
            with open(os.path.join(directory, name)) as f:
                out.extend(json.loads(line) for line in f if line.strip())
    return out


def read_rates(directory):
    """The per-update records of `RateRecorder` in `directory`, in file order per process."""
    return [r for r in _records(directory) if "t" in r]


def read_epochs(directory):
    """The epoch-end records of `RateRecorder` in `directory`, in the order they were written."""
    return sorted((r for r in _records(directory) if "epoch" in r), key=lambda r: r["time"])


class KillOnce(keras.callbacks.Callback):
    """SIGKILLs its own process at batch `batch` of epoch `epoch` (0-based), once:
    a marker file written just before the kill stops it the second time."""

    def __init__(self, marker, epoch, batch):
        super().__init__()
        self.marker, self.epoch, self.batch = str(marker), epoch, batch
        self._epoch = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._epoch == self.epoch and batch == self.batch and not os.path.exists(self.marker):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)


def closed_form_rate(t, base, total, warmup, alpha=0.0):
    """keras_trainkit's WarmUp(linear from 0, offset) over CosineDecay(alpha) at update t, in numpy."""
    t = np.asarray(t, dtype=np.float64)
    decay = max(1, total - warmup)
    ramp = base * t / max(warmup, 1)
    s = np.minimum(np.maximum(t - warmup, 0), decay) / decay
    cosine = base * ((1 - alpha) * 0.5 * (1 + np.cos(np.pi * s)) + alpha)
    return np.where(t < warmup, ramp, cosine)
