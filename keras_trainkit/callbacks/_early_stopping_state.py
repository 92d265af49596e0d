"""On-disk state of `EarlyStopping`: best-weights snapshots and resumable state.

Two kinds of files live in one directory, both written atomically (a temporary
file in the same directory, then `os.replace`):

- ``early_stopping_best-EEEEEE.npz``: the arrays taken at the end of the best
  epoch ``E`` (model weights, the optimizer's EMA weights, optimizer variables).
- ``early_stopping_state-NNNNNN.json``: the callback's counters after an epoch
  end, keyed by ``N``, the epoch the next `fit()` would start from. It names
  the ``.npz`` file holding the best weights at that point, which is always
  written before it.

The two newest states are kept: `BackupAndRestore` and `EarlyStopping` write
one after the other at each epoch end, so a process killed between the two
writes resumes from an epoch for which a state still exists (see
`StateStore.prune`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_trainkit._io import atomic_write

FORMAT_VERSION = 1
_STATE_RE = re.compile(r"^early_stopping_state-(\d+)\.json$")
_WEIGHTS_RE = re.compile(r"^early_stopping_best-(\d+)\.npz$")


@dataclass
class Snapshot:
    """Arrays taken at the end of the best epoch.

    Attributes:
        weights: `model.get_weights()`.
        ema: One entry per `model.trainable_variables`: the optimizer's moving
            average of it (`None` where the optimizer keeps none), or `None`
            when the optimizer keeps no EMA.
        optimizer: `optimizer.variables` values, or `None` when not taken.
    """

    weights: list[np.ndarray]
    ema: list[np.ndarray | None] | None = None
    optimizer: list[np.ndarray] | None = None


def save_snapshot(path: str, snapshot: Snapshot) -> None:
    """Writes `snapshot` to `path` (an `.npz` file) atomically."""
    arrays: dict[str, np.ndarray] = {}
    for i, w in enumerate(snapshot.weights):
        arrays[f"w{i}"] = np.asarray(w)
    arrays["n_weights"] = np.asarray(len(snapshot.weights))
    if snapshot.ema is not None:
        arrays["n_ema"] = np.asarray(len(snapshot.ema))
        for i, e in enumerate(snapshot.ema):
            if e is not None:
                arrays[f"e{i}"] = np.asarray(e)
    if snapshot.optimizer is not None:
        arrays["n_optimizer"] = np.asarray(len(snapshot.optimizer))
        for i, o in enumerate(snapshot.optimizer):
            arrays[f"o{i}"] = np.asarray(o)
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_snapshot(path: str) -> Snapshot:
    """Reads a snapshot written by `save_snapshot`."""
    with np.load(path, allow_pickle=False) as data:
        weights = [data[f"w{i}"] for i in range(int(data["n_weights"]))]
        ema = None
        if "n_ema" in data:
            ema = [data[f"e{i}"] if f"e{i}" in data else None for i in range(int(data["n_ema"]))]
        optimizer = None
        if "n_optimizer" in data:
            optimizer = [data[f"o{i}"] for i in range(int(data["n_optimizer"]))]
    return Snapshot(weights=weights, ema=ema, optimizer=optimizer)


def weights_filename(epoch: int) -> str:
    return f"early_stopping_best-{epoch:06d}.npz"


def state_filename(next_epoch: int) -> str:
    return f"early_stopping_state-{next_epoch:06d}.json"


class StateStore:
    """The files of one `EarlyStopping` run in `directory`."""

    def __init__(self, directory: str):
        self.directory = os.fspath(directory)

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.directory)
        except FileNotFoundError:
            return []

    def path(self, filename: str) -> str:
        return os.path.join(self.directory, filename)

    def states(self) -> list[int]:
        """The `next_epoch` of every saved state, sorted."""
        out = [int(m.group(1)) for m in map(_STATE_RE.match, self._listdir()) if m]
        return sorted(out)

    def write_snapshot(self, epoch: int, snapshot: Snapshot) -> str:
        os.makedirs(self.directory, exist_ok=True)
        name = weights_filename(epoch)
        save_snapshot(self.path(name), snapshot)
        return name

    def write_state(self, next_epoch: int, state: dict[str, Any]) -> None:
        os.makedirs(self.directory, exist_ok=True)
        payload = json.dumps({"format": FORMAT_VERSION, "next_epoch": next_epoch, **state})
        atomic_write(self.path(state_filename(next_epoch)), lambda f: f.write(payload.encode()))
        self.prune(next_epoch)

    def read_state(self, next_epoch: int) -> dict[str, Any]:
        with open(self.path(state_filename(next_epoch)), encoding="utf-8") as f:
            state = json.load(f)
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"{self.path(state_filename(next_epoch))} has format "
                f"{state.get('format')!r}; this version reads format {FORMAT_VERSION}."
            )
        return state

    def prune(self, latest: int, keep_weights: str | None = None) -> None:
        """Keeps the states for `latest` and `latest - 1` and their weights.

        States for later epochs (left by a run that was resumed from an older
        one) and weights files no kept state names are removed. `keep_weights`
        names one more weights file to keep.
        """
        kept: set[str] = set() if keep_weights is None else {keep_weights}
        for next_epoch in self.states():
            name = state_filename(next_epoch)
            if next_epoch in (latest, latest - 1):
                try:
                    weights_file = self.read_state(next_epoch).get("weights_file")
                except (OSError, ValueError):
                    continue
                if weights_file:
                    kept.add(weights_file)
            else:
                _remove(self.path(name))
        for name in self._listdir():
            if _WEIGHTS_RE.match(name) and name not in kept:
                _remove(self.path(name))

    def clear(self) -> None:
        """Removes every file of this store (and the directory when empty)."""
        for name in self._listdir():
            if _STATE_RE.match(name) or _WEIGHTS_RE.match(name):
                _remove(self.path(name))
        try:
            os.rmdir(self.directory)
        except OSError:
            pass


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
