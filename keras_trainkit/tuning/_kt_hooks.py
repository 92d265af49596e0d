"""Every touch of a Keras Tuner internal made by `keras_trainkit.tuning`, in one place.

Keras Tuner 1.4.8 has no public extension point for these; each one is pinned
by `tests/test_tuning_kt_internals.py`, so a Keras Tuner upgrade that moves
one fails there first. Public Keras Tuner API (`keras_tuner.Oracle`,
`keras_tuner.engine.hyperparameters.*`, `keras_tuner.engine.trial.*`,
`keras_tuner.engine.metrics_tracking.infer_metric_direction`) is used directly
elsewhere.

Internals used (module or attribute, and what for):

- `Oracle.save()` / `Oracle._save_trial(trial)` / `Oracle._get_oracle_fname()` /
  `Oracle._get_trial_dir(trial_id)`: overridden to write `oracle.json` and
  `trial.json` atomically.
- `BaseTuner.save()` / `BaseTuner._get_tuner_fname()` / `BaseTuner._is_worker()`:
  overridden to write the tuner state (`<tuner_id>.json`) atomically.
- `Tuner._build_and_fit_model()` (documented as an override point "for
  AutoKeras"), `Tuner._try_build()`, `Tuner._get_build_config_fname()`:
  re-implemented to write `build_config.json` atomically.
- `keras_tuner.src.engine.tuner_utils.SaveBestEpoch` (its `filepath`,
  `objective` and `_save_model()`): the best-epoch checkpoint is written to a
  temporary file and moved into place; its `objective` tells a HyperModel
  which objective the tuner optimizes.
- `keras_tuner.src.engine.tuner_utils.validate_trial_results`: the same check
  of `fit()`'s results as Keras Tuner's own `_build_and_fit_model`.
- `keras_tuner.src.engine.oracle.Display` and `Oracle._display`: the
  progress display, extended with "trial i of N" and the time left.
- `keras_tuner.src.utils.save_json`: Keras Tuner's writer, kept for remote paths.
- `keras_tuner.src.tuners.gridsearch.LinkedList` and
  `GridSearchOracle._ordered_ids` / `_populate_next`: saved with the oracle
  state (Keras Tuner issue #1055).
- `HyperParameters._hps` is NOT used; the space is rebuilt through
  `HyperParameters.space` and `merge()` (public).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

import keras_tuner
from keras_tuner.src.engine import oracle as _kt_oracle
from keras_tuner.src.engine import tuner_utils as _kt_tuner_utils
from keras_tuner.src.tuners import gridsearch as _kt_gridsearch

from keras_trainkit._io import atomic_write_text

Display = _kt_oracle.Display
SaveBestEpoch = _kt_tuner_utils.SaveBestEpoch
LinkedList = _kt_gridsearch.LinkedList
validate_trial_results = _kt_tuner_utils.validate_trial_results


def is_local_path(path: str) -> bool:
    """Paths we can write atomically with `os.replace` (not `gs://...` etc.)."""
    return "://" not in str(path)


# path -> (digest of the JSON we last wrote there, its mtime_ns, its size)
_LAST_WRITTEN: dict[str, tuple[str, int, int]] = {}
_LAST_LOCK = threading.Lock()


def write_json(path: str, obj: Any) -> None:
    """Keras Tuner's `utils.save_json`, atomic for local paths.

    Keras Tuner saves the same state several times per trial (the oracle in
    `end_trial`, then again in the tuner's `save()`); a write whose JSON equals
    what this process last wrote to that path, with the file unchanged on
    disk since (same mtime and size), is skipped: each atomic write costs two
    fsyncs.
    """
    text = json.dumps(obj)  # as Keras Tuner's save_json
    if not is_local_path(path):  # remote file systems: Keras Tuner's own (non-atomic) writer
        from keras_tuner.src import utils

        utils.save_json(path, obj)
        return
    key = os.path.abspath(path)
    digest = hashlib.sha1(text.encode("utf-8")).hexdigest()
    with _LAST_LOCK:
        last = _LAST_WRITTEN.get(key)
    if last is not None and last[0] == digest:
        try:
            st = os.stat(key)
        except OSError:
            st = None
        if st is not None and (st.st_mtime_ns, st.st_size) == last[1:]:
            return
    atomic_write_text(key, text)
    st = os.stat(key)
    with _LAST_LOCK:
        _LAST_WRITTEN[key] = (digest, st.st_mtime_ns, st.st_size)


# -- distributed mode (Keras Tuner's documented environment variables) ------------
def is_distributed_worker() -> bool:
    """True in a Keras Tuner distributed-mode worker (not the chief, not standalone)."""
    return ("KERASTUNER_ORACLE_IP" in os.environ
            and "chief" not in os.environ.get("KERASTUNER_TUNER_ID", ""))


def tuner_id() -> str:
    return os.environ.get("KERASTUNER_TUNER_ID", "tuner0")


# -- oracles ----------------------------------------------------------------------
def oracle_file(oracle) -> str:
    return oracle._get_oracle_fname()


def trial_file(oracle, trial_id: str) -> str:
    return os.path.join(oracle._get_trial_dir(trial_id), "trial.json")


def oracle_display(oracle):
    return getattr(oracle, "_display", None)


def set_oracle_display(oracle, display) -> None:
    oracle._display = display


def retry_queue(oracle) -> list[str]:
    """The ids of trials queued to run again (`Oracle._retry_queue`, a list it mutates)."""
    return oracle._retry_queue


def record_values(oracle, trial) -> None:
    """Marks a trial's values as tried (`Oracle._record_values`: no duplicate trials)."""
    oracle._record_values(trial)


def save_trial(oracle, trial) -> None:
    """Writes `trial.json` (`Oracle._save_trial`; atomic with `AtomicOracleMixin`)."""
    oracle._save_trial(trial)


class ProjectDirHook:
    """Oracle mixin: `on_project_dir(directory, project_name)` runs after Keras
    Tuner sets the oracle's project directory (`Oracle._set_project_dir`)."""

    def on_project_dir(self, directory: str, project_name: str) -> None:
        """Called once the project directory is known."""

    def _set_project_dir(self, directory, project_name):  # Keras Tuner internal
        super()._set_project_dir(directory, project_name)
        self.on_project_dir(directory, project_name)


def grid_state(oracle) -> dict[str, Any]:
    """`GridSearchOracle`'s unsaved state (issue #1055) as JSON-able lists."""
    linked = oracle._ordered_ids
    order, index = [], linked._next_index[None]
    while index is not None:
        order.append(linked._memory[index])
        index = linked._next_index[index]
    return {"ordered_ids": order, "populate_next": list(oracle._populate_next)}


def set_grid_state(oracle, state: dict[str, Any]) -> None:
    linked = LinkedList()
    for trial_id in state["ordered_ids"]:
        linked.insert(trial_id)
    oracle._ordered_ids = linked
    oracle._populate_next = list(state["populate_next"])


# -- tuners -----------------------------------------------------------------------
def tuner_file(tuner) -> str:
    return tuner._get_tuner_fname()


def tuner_is_worker(tuner) -> bool:
    return bool(tuner._is_worker())


def try_build(tuner, hp):
    return tuner._try_build(hp)


def build_config_file(tuner, trial_id: str) -> str:
    return tuner._get_build_config_fname(trial_id)


def multi_backend() -> bool:
    from keras_tuner.src.backend import config

    return bool(config.multi_backend())


def tuner_objective(callbacks) -> keras_tuner.Objective | None:
    """The objective the running tuner optimizes, read from its `SaveBestEpoch`."""
    for callback in callbacks or []:
        if isinstance(callback, SaveBestEpoch):
            return callback.objective
    return None


def checkpoint_callbacks(callbacks) -> list[Any]:
    return [c for c in callbacks or [] if isinstance(c, SaveBestEpoch)]


def checkpoint_write_path(callback) -> str:
    """Where `SaveBestEpoch` writes: its file, or a worker's temporary copy."""
    from keras_tuner.src import backend
    from keras_tuner.src.backend import config

    if config.backend() != "tensorflow":
        return callback.filepath
    return backend.io.write_filepath(callback.filepath, callback.model.distribute_strategy)


def plain_checkpoint_save(callback) -> None:
    """Keras Tuner's own `SaveBestEpoch._save_model` (non-atomic)."""
    SaveBestEpoch._save_model(callback)


def synchronized(func: Any) -> Any:
    """`keras_tuner.synchronized` (one oracle call at a time across gRPC
    threads) keeping the method's name and docstring, which Keras Tuner's
    wrapper drops."""
    import functools

    import keras_tuner

    return functools.update_wrapper(keras_tuner.synchronized(func), func)
