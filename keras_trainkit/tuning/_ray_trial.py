"""One Ray Tune trial of a HyperModel: build, restore from Ray's checkpoint, fit
with the HyperModel's own `fit()`, report every epoch with a checkpoint.

A checkpoint is a directory:

- ``model.weights.h5``: `model.save_weights` at the end of the epoch: the
  model's weights and the optimizer's variables (its update count, hence the
  position of every learning-rate schedule, and its learning-rate variable,
  hence any rescaling by `ReduceLROnPlateau`);
- ``early_stopping_<i>/``: the `backup_dir` files of the i-th
  `keras_trainkit.callbacks.EarlyStopping` of the fit (counters and the best
  epoch's weights), which it resumes from by itself;
- ``keras_trainkit_trial.json``: the epoch to resume at, the hyperparameter
  values, the learning rates the optimizer was built with, and the shapes of
  the weights and optimizer variables (to refuse a checkpoint of another
  architecture with a clear error).

The Ray calls are behind a small session object (`RaySession`), so the same
code runs, and is tested, without Ray.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from keras_trainkit import _keras_hooks as hooks
from keras_trainkit._io import atomic_write_json

FORMAT_VERSION = 1
STATE_FILE = "keras_trainkit_trial.json"
WEIGHTS_FILE = "model.weights.h5"
EARLY_STOPPING_PREFIX = "early_stopping_"


@dataclass
class TrialSpec:
    """What every trial of one `trainable()` runs (sent to Ray's workers once)."""

    hypermodel: Any
    space: Any  # keras_tuner.HyperParameters declared by the HyperModel
    x: Any
    y: Any = None
    validation_data: Any = None
    epochs: int = 1
    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Any] = field(default_factory=list)


class RaySession:
    """The Ray Tune calls of a trial (function trainable API)."""

    @contextlib.contextmanager
    def restored(self):
        """The directory of the checkpoint Ray restores this trial from, or `None`."""
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory

    def report(self, metrics: dict[str, Any], directory: str) -> None:
        """Reports one epoch's metrics with the checkpoint in `directory`
        (Ray copies it to the run's storage before returning)."""
        from ray import tune

        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))

    def work_dir(self) -> str:
        """A scratch directory inside the trial's own directory."""
        from ray import tune

        base = tune.get_context().get_trial_dir()
        os.makedirs(base, exist_ok=True)
        return tempfile.mkdtemp(prefix=".keras_trainkit-", dir=base)


def run_trial(spec: TrialSpec, config: dict[str, Any], session: Any) -> None:
    """Runs one trial: the HyperModel's `build` and `fit` for `config`,
    continuing from the session's checkpoint when there is one."""
    from keras_trainkit.tuning._ray_space import hyperparameters_for

    hp = hyperparameters_for(spec.space, config)
    keras.backend.clear_session()  # trials run one after another in a reused worker
    model = spec.hypermodel.build(hp)
    work = session.work_dir()
    try:
        trial = _Trial(spec, hp, model, session, work)
        trial.restore()
        if trial.initial_epoch < spec.epochs:
            trial.fit()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def built_rates(optimizer: Any) -> list[float | None]:
    """The learning-rate variable of each optimizer that applies updates (a
    `MultiOptimizer` has several), or `None` where the rate is a schedule."""
    out: list[float | None] = []
    for inner in hooks.inner_optimizers(optimizer):
        slot = hooks.learning_rate_slot(inner)
        out.append(float(keras.ops.convert_to_numpy(slot)) if isinstance(slot, keras.Variable) else None)
    return out


def _shapes(variables: Any) -> list[list[int]]:
    return [[int(d) for d in v.shape] for v in variables]


def _diff(saved: dict[str, Any], now: dict[str, Any]) -> str:
    keys = [k for k in dict.fromkeys([*saved, *now]) if saved.get(k, "<absent>") != now.get(k, "<absent>")]
    return ", ".join(f"{k}: {saved.get(k, '<absent>')!r} -> {now.get(k, '<absent>')!r}" for k in keys) or "none"


def read_state(directory: str) -> dict[str, Any]:
    """The trial state of a checkpoint directory written by a trial."""
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{directory!r} is not a keras_trainkit trial checkpoint: it has no "
                         f"{STATE_FILE}.") from None
    if state.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path} has format {state.get('format')!r}; this version reads format "
                         f"{FORMAT_VERSION}.")
    return state


def load_checkpoint(model: Any, directory: str, state: dict[str, Any], hp_values: dict[str, Any]) -> None:
    """Loads the weights and optimizer variables of a checkpoint into `model`,
    after checking that they fit (an exploit by population-based training
    may bring a checkpoint of another architecture)."""
    what = ("the checkpoint Ray restores this trial from was written by a trial whose "
            f"hyperparameters differ in: {_diff(state['hyperparameters'], hp_values)}")
    if _shapes(model.weights) != state["weights"]:
        raise ValueError(
            f"Cannot continue the trial: {what}, and its model has other weights. Mutate only "
            "hyperparameters that keep the model's weights (e.g. learning_rate, dropout, l1, l2) "
            "with population-based training.")
    optimizer = model.optimizer
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    if optimizer is not None and _shapes(optimizer.variables) != state["optimizer_variables"]:
        raise ValueError(
            f"Cannot continue the trial: {what}, and its optimizer has other variables (e.g. "
            "another optimizer). Mutate only hyperparameters that keep the optimizer with "
            "population-based training.")
    model.load_weights(os.path.join(directory, WEIGHTS_FILE))


class _Reporter(keras.callbacks.Callback):
    """Reports each epoch's logs to Ray with a checkpoint (last in the fit's callbacks)."""

    def __init__(self, trial: _Trial):
        super().__init__()
        self._trial = trial

    def on_epoch_end(self, epoch, logs=None):
        self._trial.report(epoch, logs or {})


class _Trial:
    def __init__(self, spec: TrialSpec, hp: Any, model: Any, session: Any, work: str):
        self.spec, self.hp, self.model, self.session, self.work = spec, hp, model, session, work
        self.rates = built_rates(model.optimizer) if model.optimizer is not None else []
        self.initial_epoch = 0
        self.start_iterations = 0
        self.stoppers: list[tuple[str, Any]] = []
        self.reporter = _Reporter(self)

    # -- restore -------------------------------------------------------------------
    def restore(self) -> None:
        with self.session.restored() as directory:
            if directory is None:
                return
            state = read_state(directory)
            load_checkpoint(self.model, directory, state, dict(self.hp.values))
            for name in state["early_stopping"]:
                shutil.copytree(os.path.join(directory, name), os.path.join(self.work, name))
            self._apply_rates(state["built_learning_rates"])
            self.initial_epoch = int(state["epoch"])
        self.start_iterations = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _apply_rates(self, saved: list[float | None]) -> None:
        """A new configuration's learning rate (population-based training's
        explore step) rescales the restored base rate: the schedule continues
        at the restored update count with base `restored * new / old`."""
        optimizers = hooks.inner_optimizers(self.model.optimizer)
        for optimizer, now, then in zip(optimizers, self.rates, saved):
            if now is None or then is None or np.float32(now) == np.float32(then):
                continue
            restored = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
            optimizer.learning_rate = restored * now / then

    # -- fit -------------------------------------------------------------------------
    def _attach_stoppers(self, callbacks: list[Any]) -> None:
        from keras_trainkit.callbacks import EarlyStopping

        for callback in callbacks:
            if isinstance(callback, EarlyStopping):
                name = f"{EARLY_STOPPING_PREFIX}{len(self.stoppers)}"
                callback.backup_dir = os.path.join(self.work, name)
                self.stoppers.append((name, callback))

    def fit(self) -> None:
        from keras_trainkit.tuning._hypermodel import TrainkitHyperModel

        spec = self.spec
        callbacks = [copy.deepcopy(cb) for cb in spec.callbacks]
        self._attach_stoppers(callbacks)
        kwargs = dict(spec.fit_kwargs)
        kwargs.setdefault("verbose", 0)
        if spec.validation_data is not None:
            kwargs["validation_data"] = spec.validation_data
        args = [spec.x] if spec.y is None else [spec.x, spec.y]
        hypermodel = spec.hypermodel
        if isinstance(hypermodel, TrainkitHyperModel):
            # The recipe's schedules span the whole trial: a restored trial
            # continues at its update count, so they are sized to the updates
            # already run plus those this fit() runs (which fit() counts).
            original = hypermodel.recipe_callbacks

            def recipe_callbacks(hp, total_steps, why=""):
                total = None if total_steps is None else total_steps + self.start_iterations
                out = list(original(hp, total, why))
                self._attach_stoppers(out)
                return out + [self.reporter]

            hypermodel = copy.copy(hypermodel)
            hypermodel.recipe_callbacks = recipe_callbacks
        else:
            callbacks.append(self.reporter)
        hypermodel.fit(self.hp, self.model, *args, epochs=spec.epochs, initial_epoch=self.initial_epoch,
                       callbacks=callbacks, **kwargs)

    # -- report ----------------------------------------------------------------------
    def report(self, epoch: int, logs: dict[str, Any]) -> None:
        metrics: dict[str, Any] = {}
        for key, value in logs.items():
            array = np.asarray(keras.ops.convert_to_numpy(value) if keras.ops.is_tensor(value) else value)
            metrics[key] = array.item() if array.size == 1 else array.tolist()
        metrics["epoch"] = epoch + 1
        optimizer = self.model.optimizer
        state = {
            "format": FORMAT_VERSION,
            "epoch": epoch + 1,
            "iterations": int(keras.ops.convert_to_numpy(optimizer.iterations)),
            "hyperparameters": dict(self.hp.values),
            "built_learning_rates": self.rates,
            "weights": _shapes(self.model.weights),
            "optimizer_variables": _shapes(optimizer.variables),
            "early_stopping": [],
            "backend": keras.backend.backend(),
        }
        directory = tempfile.mkdtemp(prefix="checkpoint-", dir=self.work)
        try:
            self.model.save_weights(os.path.join(directory, WEIGHTS_FILE))
            for name, stopper in self.stoppers:
                if os.path.isdir(stopper.backup_dir):
                    shutil.copytree(stopper.backup_dir, os.path.join(directory, name))
                    state["early_stopping"].append(name)
            atomic_write_json(os.path.join(directory, STATE_FILE), state)
            self.session.report(metrics, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
