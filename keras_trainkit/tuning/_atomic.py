"""Crash-safe files for Keras Tuner oracles and tuners.

Keras Tuner writes its JSON files with `tf.io.gfile` in place (open,
truncate, write): a process killed inside a save leaves an empty or truncated
`oracle.json`, `trial.json` or `<tuner_id>.json`, and the search cannot be
reloaded. Here every such file is written to a temporary file in the same
directory, fsynced and moved over the old one with `os.replace`, so a kill at
any moment leaves the previous version or the new one. Paths on remote file
systems (`gs://...`) keep Keras Tuner's own writer.
"""

from __future__ import annotations

import keras_tuner

from keras_trainkit import _io
from keras_trainkit.tuning import _kt_hooks

__all__ = ["AtomicOracleMixin", "make_oracle_atomic"]


class AtomicOracleMixin:
    """Makes a Keras Tuner `Oracle` write `oracle.json` and `trial.json` atomically.

    Put it first in the bases of any `keras_tuner.Oracle` subclass:

        class MyOracle(AtomicOracleMixin, keras_tuner.Oracle): ...

    It overrides `save()` (the oracle state) and the per-trial save; the
    files and their JSON are exactly Keras Tuner's, so a project written with
    it reloads with plain Keras Tuner and vice versa. `TrainkitTunerMixin`
    applies it to the oracle of any tuner it is mixed into.
    """

    def save(self):
        """Writes `oracle.json` atomically (the previous version survives a kill)."""
        _kt_hooks.write_json(_kt_hooks.oracle_file(self), self.get_state())

    def _save_trial(self, trial):  # Keras Tuner internal (see _kt_hooks)
        _kt_hooks.write_json(_kt_hooks.trial_file(self, trial.trial_id), trial.get_state())


_ATOMIC_CLASSES: dict[type, type] = {}


def make_oracle_atomic(oracle):
    """Gives an existing oracle object atomic saves; returns it.

    The oracle's class is replaced by a subclass `(AtomicOracleMixin, its
    class)` - nothing else of Keras Tuner changes, and only this object is
    affected. Oracles that already save atomically and distributed-mode
    clients (which save nothing) are returned unchanged.
    """
    if isinstance(oracle, AtomicOracleMixin) or not isinstance(oracle, keras_tuner.Oracle):
        return oracle
    cls = type(oracle)
    if cls not in _ATOMIC_CLASSES:
        _ATOMIC_CLASSES[cls] = type(f"Atomic{cls.__name__}", (AtomicOracleMixin, cls),
                                    {"__module__": cls.__module__, "__doc__": cls.__doc__})
    oracle.__class__ = _ATOMIC_CLASSES[cls]
    return oracle


def atomic_save_weights(model, path: str) -> None:
    """`model.save_weights(path)` through a temporary file and `os.replace`."""
    _io.atomic_produce(path, model.save_weights)


class _AtomicSaveBestEpoch(_kt_hooks.SaveBestEpoch):
    """Keras Tuner's best-epoch checkpoint, written atomically."""

    def _save_model(self):
        path = _kt_hooks.checkpoint_write_path(self)
        if path != self.filepath or not _kt_hooks.is_local_path(path):
            # A multi-worker replica's throw-away copy, or a remote path.
            return _kt_hooks.plain_checkpoint_save(self)
        atomic_save_weights(self.model, path)


def make_checkpoints_atomic(callbacks) -> None:
    """Switches Keras Tuner's `SaveBestEpoch` callbacks in `callbacks` to atomic writes."""
    for callback in _kt_hooks.checkpoint_callbacks(callbacks):
        if type(callback) is _kt_hooks.SaveBestEpoch:
            callback.__class__ = _AtomicSaveBestEpoch
