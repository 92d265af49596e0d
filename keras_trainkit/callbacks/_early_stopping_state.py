"""What `EarlyStopping` keeps besides its counters: best-epoch snapshots and
the resumable state on disk.

A `Snapshot` holds the arrays taken at the end of the best epoch and puts them
back; `BestWeights` decides where it lives (memory, `backup_dir`, or a
temporary directory). A `StateStore` keeps two kinds of files in one
directory, both written
atomically (`keras_trainkit._io.atomic_write`: a temporary file in the same
directory, then `os.replace`):

- ``early_stopping_best-EEEEEE.npz``: the snapshot of the best epoch ``E``.
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

import copy
import json
import os
import re
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from keras_trainkit._io import atomic_write
from keras_trainkit._keras_hooks import ema_averages

FORMAT_VERSION = 1
_STATE_RE = re.compile(r"^early_stopping_state-(\d+)\.json$")
_WEIGHTS_RE = re.compile(r"^early_stopping_best-(\d+)\.npz$")


def _copy(variable: Any) -> np.ndarray:
    return np.array(variable.numpy(), copy=True)


def _assign_all(variables: list[Any], values: list[Any], what: str) -> None:
    if len(variables) != len(values):
        raise RuntimeError(f"The best epoch's {what} has {len(values)} entries but the model "
                           f"now has {len(variables)}.")
    for variable, value in zip(variables, values, strict=True):
        if value is not None:
            variable.assign(value)


@dataclass
class Snapshot:
    """Arrays taken at the end of the best epoch.

    Attributes:
        weights: `model.get_weights()`.
        ema: One entry per `model.trainable_variables`: the optimizer's moving
            average of it (`None` where the optimizer keeps none), or `None`
            when the optimizer keeps no EMA (`use_ema=False`).
        optimizer: `optimizer.variables` values, or `None` when not taken.
    """

    weights: list[np.ndarray]
    ema: list[np.ndarray | None] | None = None
    optimizer: list[np.ndarray] | None = None

    @classmethod
    def take(cls, model: Any, optimizer_state: bool) -> Snapshot:
        """Copies `model`'s weights, its optimizer's EMA weights (if any) and,
        with `optimizer_state`, the optimizer's variables."""
        optimizer = getattr(model, "optimizer", None)
        averages = ema_averages(optimizer)
        return cls(
            weights=[np.array(w, copy=True) for w in model.get_weights()],
            ema=None if averages is None else [None if a is None else _copy(a) for a in averages],
            optimizer=[_copy(v) for v in optimizer.variables] if optimizer_state and optimizer is not None else None,
        )

    def restore(self, model: Any) -> None:
        """Puts the arrays back: the weights, then the EMA weights into the
        trainable variables (when the optimizer still keeps an EMA), then the
        optimizer's variables. Assigning from the cross-replica context updates
        every replica under a `tf.distribute` strategy."""
        model.set_weights(self.weights)
        optimizer = getattr(model, "optimizer", None)
        if self.ema is not None and getattr(optimizer, "use_ema", False):
            _assign_all(list(model.trainable_variables), self.ema, "EMA")
        if self.optimizer is not None and optimizer is not None:
            _assign_all(list(optimizer.variables), self.optimizer, "optimizer state")

    def save(self, path: str) -> None:
        """Writes the snapshot to `path` (an `.npz` file) atomically."""
        arrays = {f"w{i}": np.asarray(w) for i, w in enumerate(self.weights)}
        arrays["n_weights"] = np.asarray(len(self.weights))
        for prefix, values in (("e", self.ema), ("o", self.optimizer)):
            if values is not None:
                arrays[f"n_{prefix}"] = np.asarray(len(values))
                arrays.update({f"{prefix}{i}": np.asarray(a) for i, a in enumerate(values) if a is not None})
        atomic_write(path, lambda f: np.savez(f, **arrays))

    @classmethod
    def load(cls, path: str) -> Snapshot:
        """Reads a snapshot written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            def entries(prefix: str) -> list[np.ndarray | None] | None:
                if f"n_{prefix}" not in data:
                    return None
                return [data[f"{prefix}{i}"] if f"{prefix}{i}" in data else None
                        for i in range(int(data[f"n_{prefix}"]))]

            weights = [data[f"w{i}"] for i in range(int(data["n_weights"]))]
            return cls(weights=weights, ema=entries("e"), optimizer=entries("o"))


def weights_filename(epoch: int) -> str:
    """Name of the snapshot file of best epoch `epoch`."""
    return f"early_stopping_best-{epoch:06d}.npz"


def state_filename(next_epoch: int) -> str:
    """Name of the state file saved for a `fit()` resuming at `next_epoch`."""
    return f"early_stopping_state-{next_epoch:06d}.json"


class StateStore:
    """The files of one `EarlyStopping` run in `directory`.

    Args:
        directory: Where the files live; created at the first write.
    """

    def __init__(self, directory: str):
        self.directory = os.fspath(directory)

    def _listdir(self) -> list[str]:
        try:
            return os.listdir(self.directory)
        except FileNotFoundError:
            return []

    def path(self, filename: str) -> str:
        """The full path of `filename` in this store."""
        return os.path.join(self.directory, filename)

    def states(self) -> list[int]:
        """The `next_epoch` of every saved state, sorted."""
        return sorted(int(m.group(1)) for m in map(_STATE_RE.match, self._listdir()) if m)

    def write_snapshot(self, epoch: int, snapshot: Snapshot) -> str:
        """Saves the snapshot of best epoch `epoch`; returns its path."""
        os.makedirs(self.directory, exist_ok=True)
        path = self.path(weights_filename(epoch))
        snapshot.save(path)
        return path

    def write_state(self, next_epoch: int, state: dict[str, Any]) -> None:
        """Saves `state` for a `fit()` resuming at `next_epoch`, then prunes."""
        os.makedirs(self.directory, exist_ok=True)
        payload = json.dumps({"format": FORMAT_VERSION, "next_epoch": next_epoch, **state})
        atomic_write(self.path(state_filename(next_epoch)), lambda f: f.write(payload.encode()))
        self.prune(next_epoch)

    def state_to_resume(self, start_epoch: int | None) -> dict[str, Any] | None:
        """The state saved for a `fit()` starting at `start_epoch`, or `None`.

        A `fit()` starting at epoch 0 starts afresh: any state left by an
        earlier run is removed. A missing state warns (the callback then
        starts with a fresh patience counter).
        """
        saved = self.states()
        if not saved or start_epoch is None:
            return None
        if start_epoch == 0:
            self.clear()
            return None
        if start_epoch in saved:
            return self.read_state(start_epoch)
        warnings.warn(
            f"EarlyStopping found no saved state for epoch {start_epoch} in "
            f"backup_dir={self.directory!r} (saved: {saved}); starting with a fresh "
            "patience counter. Put EarlyStopping before BackupAndRestore in `callbacks`.",
            stacklevel=4,
        )
        return None

    def read_state(self, next_epoch: int) -> dict[str, Any]:
        """The state saved for `next_epoch`; raises on an unknown format."""
        path = self.path(state_filename(next_epoch))
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
        if state.get("format") != FORMAT_VERSION:
            raise ValueError(f"{path} has format {state.get('format')!r}; this version reads format "
                             f"{FORMAT_VERSION}.")
        return state

    def prune(self, latest: int) -> None:
        """Keeps the states for `latest` and `latest - 1` and their weights.

        States for other epochs (e.g. later ones, left by a run that was
        resumed from an older one) and weights files no kept state names are
        removed.
        """
        kept: set[str] = set()
        for next_epoch in self.states():
            if next_epoch in (latest, latest - 1):
                try:
                    kept.add(self.read_state(next_epoch).get("weights_file") or "")
                except (OSError, ValueError):
                    continue
            else:
                _remove(self.path(state_filename(next_epoch)))
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


class BestWeights:
    """Where `EarlyStopping` keeps the best epoch's `Snapshot`.

    In memory by default, and also in `backup_dir` when given (for resuming).
    With `on_disk`, only in an `.npz` file: in `backup_dir`, else in a
    temporary directory of this object's own, removed by `release()`.

    Args:
        on_disk: Keep the snapshot in a file only. Defaults to `False`.
        backup_dir: The `StateStore` directory, or `None`. Defaults to `None`.
        optimizer_state: Also take the optimizer's variables. Defaults to `False`.
    """

    def __init__(self, on_disk: bool = False, backup_dir: str | None = None, optimizer_state: bool = False):
        self.on_disk, self.backup_dir, self.optimizer_state = on_disk, backup_dir, optimizer_state
        self.snapshot: Snapshot | None = None  # in memory
        self.path: str | None = None  # on disk
        self._tmp_dir: str | None = None

    def keep(self, epoch: int, model: Any) -> None:
        """Takes the snapshot of best epoch `epoch` from `model`."""
        snapshot = Snapshot.take(model, self.optimizer_state)
        path = None
        if self.backup_dir is not None:  # pruned by StateStore.write_state
            path = StateStore(self.backup_dir).write_snapshot(epoch, snapshot)
        elif self.on_disk:
            self._tmp_dir = self._tmp_dir or tempfile.mkdtemp(prefix="keras_trainkit_early_stopping_")
            path = StateStore(self._tmp_dir).write_snapshot(epoch, snapshot)
            if self.path is not None and self.path != path:
                os.remove(self.path)
        self.snapshot, self.path = (None, path) if self.on_disk else (snapshot, None)

    def adopt(self, path: str) -> None:
        """Takes the snapshot saved at `path` (resuming from `backup_dir`)."""
        self.snapshot, self.path = (None, path) if self.on_disk else (Snapshot.load(path), None)

    def get(self) -> Snapshot | None:
        """The snapshot, read back from disk if needed; `None` if none."""
        return Snapshot.load(self.path) if self.path is not None else self.snapshot

    def release(self) -> None:
        """Forgets the file (its directory is removed or cleared when training
        ends) and removes the temporary directory; keeps the memory snapshot."""
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)
        self.path = self._tmp_dir = None

    def __deepcopy__(self, memo: dict) -> BestWeights:
        """Deep-copies everything but the temporary directory, which belongs
        to this object (the copy gets neither it nor the path of its file)."""
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        clone.__dict__.update(copy.deepcopy(vars(self), memo))
        if self._tmp_dir is not None:
            clone._tmp_dir = clone.path = None
        return clone


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
