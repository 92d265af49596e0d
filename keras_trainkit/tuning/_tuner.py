"""`TrainkitTunerMixin`: what keras_trainkit's tuners add to any Keras Tuner tuner."""

from __future__ import annotations

import inspect
import time
from typing import Any

import keras_tuner

from keras_trainkit.tuning import _data, _kt_hooks
from keras_trainkit.tuning._atomic import make_checkpoints_atomic, make_oracle_atomic
from keras_trainkit.tuning._errors import SearchFailedError, fatal
from keras_trainkit.tuning._hypermodel import TrainkitHyperModel
from keras_trainkit.tuning._objective import make_objective
from keras_trainkit.tuning._progress import install_display

__all__ = ["TrainkitTunerMixin", "resolve_objective"]


def resolve_objective(objective: Any, hypermodel: Any = None) -> Any:
    """The tuner's objective, checked and with its direction inferred correctly.

    With a `TrainkitHyperModel`, `None` means the hypermodel's objective, a
    name must be a metric the model compiles, and the hypermodel's own
    objective keeps its direction. Otherwise a name gets keras_trainkit's
    inference (Keras Tuner's, corrected), and a name whose direction cannot be
    inferred raises. Lists (multi-objective) are resolved item by item.

    Raises:
        ValueError: naming `objective`.
    """
    if isinstance(objective, (list, tuple)):
        return [resolve_objective(o, hypermodel) for o in objective]
    if isinstance(hypermodel, TrainkitHyperModel):
        ours = hypermodel.objective
        if objective is None:
            return ours
        name = objective if isinstance(objective, str) else getattr(objective, "name", None)
        if name == ours.name:
            if isinstance(objective, keras_tuner.Objective) and objective.direction != ours.direction:
                raise ValueError(
                    f"Argument `objective` {objective} contradicts the HyperModel's {ours} (its "
                    f"EarlyStopping monitors it). Pass objective=hypermodel.objective, or change "
                    f"make_hypermodel(objective=...). Received: objective={objective}")
            return ours
        return make_objective(objective, hypermodel.compiled_metrics)
    if objective is None:
        return None
    return make_objective(objective)


class TrainkitTunerMixin:
    """Makes any Keras Tuner tuner crash-safe, talkative and strict.

    Put it first in the bases of a `keras_tuner.Tuner` subclass:

        class SafeHyperband(TrainkitTunerMixin, keras_tuner.Hyperband):
            pass

    It adds, without patching Keras Tuner globally:

    - Atomic files: the oracle's `oracle.json` and `trial.json` (its class
      gets `AtomicOracleMixin`), the tuner state `<tuner_id>.json`, each
      trial's `build_config.json` and best-epoch checkpoint
      (`checkpoint.weights.h5`) are written to a temporary file and moved into
      place, so a kill at any moment leaves the previous version loadable.
    - Progress: Keras Tuner's display plus "trial i of N" and an estimate of
      the time left; in distributed mode each worker prints one line per
      trial it starts and ends, prefixed with its tuner id. `verbose=0`
      in `search()` silences all of it.
    - Objectives: a string objective gets keras_trainkit's inference; with a
      `make_hypermodel` HyperModel, `objective=None` means its objective and
      any objective must be a metric the model compiles.
    - Data: with a `make_hypermodel` HyperModel and pre-batched data (a
      batched tf.data.Dataset, a `PyDataset`, a generator), `batch_size` is
      left out of the search space before the first trial, and the search
      says so once.
    - Failure: if every trial fails, `search()` raises `SearchFailedError`
      with the first trial's error, whatever `max_trials` is.

    It replaces `Tuner._build_and_fit_model` (with the same steps as Keras
    Tuner's), so a tuner overriding that method itself must come before it.
    """

    def __init__(self, *args, **kwargs):
        hypermodel = kwargs["hypermodel"] if "hypermodel" in kwargs else (args[0] if args else None)
        with fatal():
            if "objective" in kwargs:
                kwargs["objective"] = resolve_objective(kwargs["objective"], hypermodel)
            elif len(args) > 1:
                args = (args[0], resolve_objective(args[1], hypermodel), *args[2:])
            elif isinstance(hypermodel, TrainkitHyperModel) and "objective" in inspect.signature(
                    super().__init__).parameters:
                kwargs["objective"] = hypermodel.objective
        super().__init__(*args, **kwargs)
        make_oracle_atomic(self.oracle)
        install_display(self.oracle)
        self._trainkit_verbose = 1
        self._trial_started: dict[str, float] = {}

    # -- atomic files ---------------------------------------------------------------
    def save(self):
        """Writes the oracle (chief only) and the tuner state atomically."""
        if not _kt_hooks.tuner_is_worker(self):
            self.oracle.save()
        _kt_hooks.write_json(_kt_hooks.tuner_file(self), self.get_state())

    def _build_and_fit_model(self, trial, *args, **kwargs):  # Keras Tuner's, atomic writes
        make_checkpoints_atomic(kwargs.get("callbacks"))
        hp = trial.hyperparameters
        model = _kt_hooks.try_build(self, hp)
        results = self.hypermodel.fit(hp, model, *args, **kwargs)
        if _kt_hooks.multi_backend():
            _kt_hooks.write_json(_kt_hooks.build_config_file(self, trial.trial_id),
                                 model.get_build_config())
        _kt_hooks.validate_trial_results(results, self.oracle.objective, "HyperModel.fit()")
        return results

    # -- search -----------------------------------------------------------------------
    def search(self, *fit_args, **fit_kwargs):
        """Keras Tuner's `search`, with the progress display and `SearchFailedError`
        when every trial failed."""
        verbose = fit_kwargs.get("verbose", 1)
        self._trainkit_verbose = 1 if verbose == "auto" else verbose
        with fatal():
            self._adapt_to_data(fit_args, fit_kwargs)
        try:
            super().search(*fit_args, **fit_kwargs)
        except RuntimeError as e:
            failure = self._all_failed()
            if failure is not None:
                raise failure from e
            raise
        failure = self._all_failed()
        if failure is not None:
            raise failure

    def _adapt_to_data(self, fit_args, fit_kwargs) -> None:
        hypermodel = self.hypermodel
        if not isinstance(hypermodel, TrainkitHyperModel) or "batch_size" not in hypermodel.space:
            return
        x = fit_args[0] if fit_args else fit_kwargs.get("x")
        data = _data.inspect_data(x, len(hypermodel.input_shape), fit_kwargs.get("validation_split"))
        if not data.batched:
            return
        kind, arguments = hypermodel.space["batch_size"]
        if kind == "Fixed":
            raise ValueError(
                f"Argument `x` sets its own batch size (it is pre-batched), but search_space fixes "
                f"'batch_size' to {arguments['value']!r}. Pass search_space={{'batch_size': None}} "
                "or unbatched data.")
        hypermodel._leave_out_batch_size()
        if not _kt_hooks.tuner_is_worker(self):
            space = self.oracle.hyperparameters
            if any(hp.name == "batch_size" for hp in space.space):
                if self.oracle.trials:
                    raise ValueError(
                        "Argument `x` is pre-batched now, but this search (resumed from "
                        f"{self.project_dir}) tuned 'batch_size' over unbatched data. Resume with "
                        "the same data, or start over with overwrite=True.")
                kept = keras_tuner.HyperParameters()
                kept.merge([hp for hp in space.space if hp.name != "batch_size"])
                self.oracle.hyperparameters = kept
        if self._trainkit_verbose:
            print("keras_trainkit: the training data is pre-batched (it sets the batch size), so "
                  "'batch_size' is left out of the search space.", flush=True)

    def _all_failed(self) -> SearchFailedError | None:
        if _kt_hooks.tuner_is_worker(self):
            return None
        trials = self.oracle.trials
        if not trials or any(t.status == "COMPLETED" for t in trials.values()):
            return None
        order = [i for i in self.oracle.start_order if i in trials] or sorted(trials)
        failed = [trials[i] for i in order if trials[i].status in ("FAILED", "INVALID")]
        if not failed:
            return None
        first = failed[0]
        message = (first.message or "").rstrip()
        return SearchFailedError(
            f"All {len(failed)} trials of the search failed. The first one (trial "
            f"{first.trial_id}) failed with:\n{message}", first.trial_id, message)

    # -- per-worker progress lines ------------------------------------------------------
    def on_trial_begin(self, trial):
        """Keras Tuner's, plus a one-line trial header in distributed workers."""
        super().on_trial_begin(trial)
        if _kt_hooks.tuner_is_worker(self) and self._trainkit_verbose:
            self._trial_started[trial.trial_id] = time.monotonic()
            values = ", ".join(f"{k}={_short(v)}" for k, v in trial.hyperparameters.values.items())
            print(f"[{self.tuner_id}] Trial {trial.trial_id} started: {values}", flush=True)

    def on_trial_end(self, trial):
        """Keras Tuner's, plus a one-line result in distributed workers."""
        if _kt_hooks.tuner_is_worker(self) and self._trainkit_verbose:
            took = time.monotonic() - self._trial_started.pop(trial.trial_id, time.monotonic())
            print(f"[{self.tuner_id}] Trial {trial.trial_id} ended ({trial.status}) after "
                  f"{took:.0f}s", flush=True)
        super().on_trial_end(trial)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
