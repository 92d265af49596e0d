"""Optuna inside Keras Tuner: `OptunaOracle`, `OptunaSearch`.

Every Keras Tuner trial is a trial of an `optuna.Study`: the study's sampler
chooses the hyperparameters (define-by-run, through `suggest_hyperparameters`),
its pruner stops unpromising trials at an epoch, and its storage (SQLite,
PostgreSQL, MySQL, or any `optuna.storages.BaseStorage`) holds the search, so
that a killed search resumes and several machines share one study.

Optuna is an optional dependency, imported only when an `OptunaOracle` is
created (`pip install "keras_trainkit[optuna]"`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import time
import uuid
from typing import Any

import keras_tuner
from keras_tuner.engine import trial as trial_module

from keras_trainkit.tuning import _kt_hooks
from keras_trainkit.tuning._atomic import AtomicOracleMixin
from keras_trainkit.tuning._errors import fatal
from keras_trainkit.tuning._optuna_space import (
    check_search_space,
    suggest_hyperparameters,
)
from keras_trainkit.tuning._tuner import TrainkitTunerMixin, resolve_objective

__all__ = ["OptunaOracle", "OptunaSearch", "ParetoTrial"]

# Optuna user attributes written by the oracle.
TAG_KEY = "keras_tuner"  # {"owner": project uuid, "trial_id": Keras Tuner trial id}
VALUES_KEY = "keras_tuner.values"  # the trial's Keras Tuner values (readable in optuna-dashboard)
SURPLUS_KEY = "keras_tuner.surplus"  # created past max_trials by a concurrent worker: FAIL, not counted
ORPHAN_KEY = "keras_tuner.orphan"  # never tagged (process killed right after ask): FAIL, not counted
# The marker of an intermediate (per-epoch) report in `update_trial`'s metrics.
REPORT_KEY = "keras_trainkit.optuna.report"

_STOPPED = trial_module.TrialStatus.STOPPED
_RUNNING = trial_module.TrialStatus.RUNNING
_COMPLETED = trial_module.TrialStatus.COMPLETED
_FAILED = trial_module.TrialStatus.FAILED


def _import_optuna():
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - exercised with optuna blocked
        raise ImportError(
            "OptunaOracle and OptunaSearch need Optuna: "
            'pip install "keras_trainkit[optuna]"') from e
    return optuna


def _redact(url: str) -> str:
    """A storage URL with its password hidden (safe to echo in errors)."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


@dataclasses.dataclass(frozen=True)
class ParetoTrial:
    """A trial on the Pareto front of a (multi-objective) `OptunaSearch`.

    Attributes:
        trial_id: The Keras Tuner trial id.
        number: The Optuna trial number.
        hyperparameters: `{name: value}` of the trial's Keras Tuner hyperparameters.
        values: `{objective name: value}`, in the order of the objectives.
    """

    trial_id: str
    number: int
    hyperparameters: dict[str, Any]
    values: dict[str, float]


class OptunaOracle(_kt_hooks.ProjectDirHook, AtomicOracleMixin, keras_tuner.Oracle):
    """A Keras Tuner oracle whose trials are the trials of an `optuna.Study`.

    Each `create_trial` asks the study for a trial and samples the Keras
    Tuner search space with it define-by-run (`suggest_hyperparameters`: a
    conditional hyperparameter is suggested only when its parent value is
    active). `OptunaSearch` reports the objective after every epoch
    (`update_trial` with a report marker; the oracle calls
    `optuna.Trial.report`); when the study's pruner says so, `update_trial`
    answers a trial with status `"STOPPED"` and the tuner stops that fit at
    the epoch. `end_trial` tells the study the result: `COMPLETE` with the
    Keras Tuner score (the objective's best epoch), `PRUNED` for a pruned
    trial (its Keras Tuner status stays `"COMPLETED"`, with its score so far,
    a message, and it ranks after every unpruned trial in
    `get_best_trials`), `FAIL` for a failed one. Its files (`oracle.json`,
    `trial.json`) are written atomically (`AtomicOracleMixin`).

    The study lives in `storage`; by default Optuna's journal file
    `optuna.journal` in the Keras Tuner project directory, so
    `overwrite=False` resumes like any Keras Tuner project. With a shared RDB URL (PostgreSQL or MySQL for many
    machines, SQLite for processes on one machine) several searches with the
    same `study_name` (each with its own project directory) run one study
    together. `max_trials` is the size of the study: a search stops when the
    study holds `max_trials` trials, whoever ran them (trials that a racing
    worker created past the budget are marked `FAIL` with the user attribute
    `keras_tuner.surplus` and not counted).

    Resume is reconciled with the storage, which is the source of truth: a
    trial that was running when the process died is run again as the same
    Optuna trial with the same hyperparameters (its already reported epochs
    are kept); a trial that the study holds but the project files missed is
    adopted; a result that Keras Tuner saved but Optuna did not receive is
    told. Every Optuna trial carries the user attributes `keras_tuner`
    (`{"owner": project uuid, "trial_id": ...}`) and `keras_tuner.values`
    (the Keras Tuner values, readable in optuna-dashboard).

    A list of objectives makes a multi-objective study (NSGA-II by default;
    no pruning: Optuna has no intermediate values for several objectives);
    see `pareto_front()`.

    Args:
        objective: A metric name, `keras_tuner.Objective`, or a list of them
            (multi-objective). Defaults to `None` (`run_trial` returns the
            value to minimize).
        max_trials: Trials in the study, an int >= 1, or `None` for no limit.
            Defaults to `20`.
        sampler: An `optuna.samplers.BaseSampler`. Defaults to `None`:
            `TPESampler(seed=seed)`, or `NSGAIISampler(seed=seed)` for several
            objectives.
        pruner: An `optuna.pruners.BasePruner` (`MedianPruner`,
            `PercentilePruner`, `SuccessiveHalvingPruner`, `HyperbandPruner`,
            ...). Defaults to `None`: `NopPruner()`, no pruning.
        storage: An RDB URL (`"sqlite:///study.db"`,
            `"postgresql://user:password@host/db"`, `"mysql+pymysql://..."`)
            or an `optuna.storages.BaseStorage` (e.g. `JournalStorage`). Defaults
            to `None`: `JournalStorage` on `<directory>/<project_name>/optuna.journal`.
        study_name: The study's name; an existing study of that name is
            continued. Defaults to `None`: the tuner's `project_name`.
        hyperparameters, allow_new_entries, tune_new_entries,
        max_retries_per_trial, max_consecutive_failed_trials: As for
            `keras_tuner.Oracle`.
        seed: Seed of the default sampler, an int >= 0. Defaults to `None`
            (unseeded). Seed your own sampler instead when you pass one.

    Attributes:
        study: The `optuna.Study` (opened when the tuner sets the project
            directory): use `optuna.visualization`,
            `optuna.importance.get_param_importances` or optuna-dashboard on it.

    Raises:
        ImportError: when Optuna is not installed.
        keras_tuner.errors.FatalValueError: (a `ValueError`) for a sampler or
            pruner that is not one, a storage that cannot be opened, an
            existing study whose directions differ from the objectives, before
            the first trial.
    """

    #: An untagged RUNNING Optuna trial older than this (seconds) is an orphan.
    orphan_grace_seconds = 600.0

    def __init__(self, objective=None, max_trials=20, sampler=None, pruner=None, storage=None,
                 study_name=None, hyperparameters=None, seed=None, allow_new_entries=True,
                 tune_new_entries=True, max_retries_per_trial=0, max_consecutive_failed_trials=3):
        optuna = _import_optuna()
        from keras_trainkit import _validation as v

        with fatal():
            if max_trials is not None:
                v.integer("max_trials", max_trials, low=1)
            if seed is not None:
                v.integer("seed", seed, low=0)
            if sampler is not None and not isinstance(sampler, optuna.samplers.BaseSampler):
                raise ValueError("Argument `sampler` must be an optuna.samplers.BaseSampler (e.g. "
                                 f"optuna.samplers.TPESampler()). Received: sampler={sampler!r}")
            if sampler is not None and seed is not None:
                raise ValueError("Argument `seed` seeds the default sampler only; seed the sampler you "
                                 f"pass instead. Received: seed={seed!r}, sampler={sampler!r}")
            if pruner is not None and not isinstance(pruner, optuna.pruners.BasePruner):
                raise ValueError("Argument `pruner` must be an optuna.pruners.BasePruner (e.g. "
                                 f"optuna.pruners.MedianPruner()). Received: pruner={pruner!r}")
            if study_name is not None and (not isinstance(study_name, str) or not study_name):
                raise ValueError(f"Argument `study_name` must be a non-empty string. Received: study_name={study_name!r}")
        super().__init__(objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
                         allow_new_entries=allow_new_entries, tune_new_entries=tune_new_entries,
                         seed=seed, max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        # A list of objectives makes Keras Tuner's MultiObjective (not exported): duck-typed.
        multi = getattr(self.objective, "objectives", None) is not None
        self._multi = multi
        objectives = self.objective.objectives if multi else [self.objective]
        self.directions = ["maximize" if o.direction == "max" else "minimize" for o in objectives]
        self.objective_names = [o.name for o in objectives]
        with fatal():
            if multi and pruner is not None and not isinstance(pruner, optuna.pruners.NopPruner):
                raise ValueError("Argument `pruner` cannot prune a multi-objective search (Optuna has no "
                                 f"intermediate values for several objectives). Received: pruner={pruner!r}")
        self._seed = seed  # keras_tuner.Oracle replaces a falsy seed (0) by a random one
        self._default_sampler = sampler is None
        if sampler is None:
            sampler = self._make_default_sampler(seed)
        self.sampler = sampler
        self.pruner = pruner if pruner is not None else optuna.pruners.NopPruner()
        self.study_name = study_name
        self._storage_arg = storage
        self._storage = None if storage is None else _open_storage(optuna, storage)
        self._study = None
        self._study_dir = None
        self._owner = uuid.uuid4().hex
        self._numbers: dict[str, int] = {}  # Keras Tuner trial id -> Optuna trial number
        self._pruned: dict[str, int] = {}  # Keras Tuner trial id -> step it was pruned at
        self._live: dict[str, Any] = {}  # Keras Tuner trial id -> optuna.Trial (this process)
        self._reconciled = False
        self._saved = False
        if self._storage is not None and study_name is not None:
            self._check_existing_study(study_name)

    def _make_default_sampler(self, seed):
        optuna = _import_optuna()
        if self._multi:
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed)

    # -- the study ------------------------------------------------------------------
    @property
    def multi_objective(self) -> bool:
        """Whether the objective is a list (a multi-objective study)."""
        return self._multi

    @property
    def prunes(self) -> bool:
        """Whether the pruner can stop trials (anything but `NopPruner`)."""
        optuna = _import_optuna()
        return not isinstance(self.pruner, optuna.pruners.NopPruner)

    @property
    def study(self):
        """The `optuna.Study` of this search."""
        if self._study is None:
            self._study = self._open_study()
        return self._study

    def on_project_dir(self, directory, project_name):
        """Remembers the project: the default study is named after it and stored in it."""
        self._study_dir = (os.path.abspath(os.path.join(str(directory), project_name)), project_name)

    def _resolved_name(self):
        if self.study_name is not None:
            return self.study_name
        if self._study_dir is None:
            raise RuntimeError("OptunaOracle.study opens when a tuner sets the project directory "
                               "(or pass both `storage` and `study_name`).")
        return self._study_dir[1]

    def _open_study(self):
        optuna = _import_optuna()
        name = self._resolved_name()
        if self._storage is None:
            if self._study_dir is None:
                raise RuntimeError("OptunaOracle.study opens when a tuner sets the project directory.")
            os.makedirs(self._study_dir[0], exist_ok=True)
            # Optuna's journal file: append-only, safe across processes, fast to open and write.
            self._storage = optuna.storages.JournalStorage(
                optuna.storages.journal.JournalFileBackend(self._default_storage_path()))
        self._check_existing_study(name)
        if self._default_sampler and self._seed is not None:
            # A seeded sampler restarted on a study that has trials would replay its random
            # start-up sequence and repeat trials: continue with a seed derived from both.
            existing = self._existing_trial_count(name)
            if existing:
                import numpy as np

                derived = int(np.random.SeedSequence([self._seed, existing]).generate_state(1)[0])
                self.sampler = self._make_default_sampler(derived)
        return optuna.create_study(storage=self._storage, sampler=self.sampler, pruner=self.pruner,
                                   study_name=name, directions=self.directions, load_if_exists=True)

    def _existing_trial_count(self, name):
        try:
            study_id = self._storage.get_study_id_from_name(name)
        except KeyError:
            return 0
        return len(self._storage.get_all_trials(study_id, deepcopy=False))

    def _check_existing_study(self, name):
        try:
            study_id = self._storage.get_study_id_from_name(name)
        except KeyError:
            return
        existing = [d.name.lower() for d in self._storage.get_study_directions(study_id)]
        if existing != self.directions:
            raise keras_tuner.errors.FatalValueError(
                f"The existing study {name!r} in storage {self._storage_repr()} optimizes "
                f"{existing}, but the objective(s) {self.objective_names} need {self.directions}. "
                "Use another `study_name`, or objectives with the study's directions.")

    def _default_storage_path(self):
        return os.path.join(self._study_dir[0], "optuna.journal")

    def _storage_repr(self):
        if isinstance(self._storage_arg, str):
            return repr(_redact(self._storage_arg))
        if self._storage_arg is None and self._study_dir is not None:
            return repr(self._default_storage_path())
        return type(self._storage).__name__

    def _trial_object(self, number):
        """An `optuna.Trial` for a running trial of the study (after a restart too)."""
        optuna = _import_optuna()
        study = self.study
        study_id = self._storage.get_study_id_from_name(study.study_name)
        trial_id = self._storage.get_trial_id_from_study_id_trial_number(study_id, number)
        return optuna.Trial(study, trial_id)

    def _frozen(self, number):
        for t in self.study.get_trials(deepcopy=False):
            if t.number == number:
                return t
        raise KeyError(number)

    def _format_id(self, number):
        return f"{number:0{len(str(self.max_trials))}d}"

    # -- trials -----------------------------------------------------------------------
    @_kt_hooks.synchronized
    def create_trial(self, tuner_id):
        """The next trial for `tuner_id`: a new trial of the Optuna study, its
        hyperparameters sampled define-by-run (or the tuner's ongoing one)."""
        if tuner_id in self.ongoing_trials:
            return self.ongoing_trials[tuner_id]
        self.tuner_ids.add(tuner_id)
        if not self._saved:
            self.save()  # the project's owner id is on disk before any Optuna trial carries it
        if not self._reconciled:
            self._reconcile()
        if _kt_hooks.retry_queue(self):
            trial = self.trials[_kt_hooks.retry_queue(self).pop()]
            trial.status = _RUNNING
            self.ongoing_trials[tuner_id] = trial
            self.save()
            _kt_hooks.oracle_display(self).on_trial_begin(trial)
            return trial
        trial = self._new_trial()
        if trial is None:
            self.tuner_ids.discard(tuner_id)
            return trial_module.Trial(self.hyperparameters.copy(), status=_STOPPED)
        _kt_hooks.record_values(self, trial)
        self.ongoing_trials[tuner_id] = trial
        self.trials[trial.trial_id] = trial
        self.start_order.append(trial.trial_id)
        _kt_hooks.save_trial(self, trial)
        self.save()
        _kt_hooks.oracle_display(self).on_trial_begin(trial)
        return trial

    def _counted(self, trials):
        """The trials that use the budget: not enqueued (WAITING), surplus or orphaned."""
        waiting = _import_optuna().trial.TrialState.WAITING
        return [t for t in trials if t.state != waiting and not t.user_attrs.get(SURPLUS_KEY)
                and not t.user_attrs.get(ORPHAN_KEY)]

    def _new_trial(self):
        optuna = _import_optuna()
        study = self.study
        if self.max_trials is not None and len(self._counted(study.get_trials(deepcopy=False))) >= self.max_trials:
            return None
        with fatal():
            check_search_space(self.hyperparameters)
        ot = study.ask()
        trial_id = self._format_id(ot.number)
        ot.set_user_attr(TAG_KEY, {"owner": self._owner, "trial_id": trial_id})
        if self.max_trials is not None:
            earlier = [t for t in self._counted(study.get_trials(deepcopy=False)) if t.number < ot.number]
            if len(earlier) >= self.max_trials:  # a concurrent worker took the last slot
                ot.set_user_attr(SURPLUS_KEY, True)
                study.tell(ot, state=optuna.trial.TrialState.FAIL)
                return None
        try:
            values = suggest_hyperparameters(ot, self.hyperparameters)
            ot.set_user_attr(VALUES_KEY, values)
        except BaseException:
            study.tell(ot, state=optuna.trial.TrialState.FAIL)
            raise
        self._numbers[trial_id] = ot.number
        self._live[trial_id] = ot
        hps = self.hyperparameters.copy()
        hps.values = values
        return trial_module.Trial(hyperparameters=hps, trial_id=trial_id, status=_RUNNING)

    def populate_space(self, trial_id):  # pragma: no cover - create_trial does the sampling
        raise NotImplementedError("OptunaOracle samples in create_trial, through its study.")

    @_kt_hooks.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        """Records an epoch's metrics; with the objective's report marker, also
        reports to the Optuna trial and answers STOPPED when the pruner prunes."""
        if REPORT_KEY not in metrics:
            return super().update_trial(trial_id, metrics, step=step)
        # An intermediate (per-epoch) report from OptunaSearch.on_epoch_end.
        trial = self.trials[trial_id]
        if trial_id in self._pruned:
            return trial_module.Trial(trial.hyperparameters, trial_id=trial_id, status=_STOPPED)
        name = self.objective_names[0]
        if self.multi_objective or name not in metrics:
            return trial_module.Trial(trial.hyperparameters, trial_id=trial_id, status=_RUNNING)
        number = self._numbers[trial_id]
        step = int(step)
        live = self._live.get(trial_id)
        if live is None:
            live = self._live[trial_id] = self._trial_object(number)
        if step not in self._frozen(number).intermediate_values:  # a rerun keeps the first report
            live.report(float(metrics[name]), step)
        if live.should_prune():
            self._pruned[trial_id] = step
            self.save()
            return trial_module.Trial(trial.hyperparameters, trial_id=trial_id, status=_STOPPED)
        return trial_module.Trial(trial.hyperparameters, trial_id=trial_id, status=_RUNNING)

    @_kt_hooks.synchronized
    def end_trial(self, trial):
        """Ends the Keras Tuner trial and tells the Optuna study its result
        (COMPLETE, PRUNED or FAIL)."""
        try:
            super().end_trial(trial)
        finally:
            ended = self.trials[trial.trial_id]
            if ended.status in (_COMPLETED, _FAILED):
                if ended.trial_id in self._pruned and ended.status == _COMPLETED:
                    ended.message = (f"Pruned by {type(self.pruner).__name__} after step "
                                     f"{self._pruned[ended.trial_id]}.")
                    _kt_hooks.save_trial(self, ended)
                self._tell(ended)
                self._live.pop(ended.trial_id, None)

    def _tell(self, trial):
        optuna = _import_optuna()
        state = optuna.trial.TrialState
        number = self._numbers[trial.trial_id]
        if trial.status == _COMPLETED and trial.trial_id in self._pruned:
            self.study.tell(number, state=state.PRUNED, skip_if_finished=True)
            return
        values = self._values_of(trial) if trial.status == _COMPLETED else None
        if values is None:
            self.study.tell(number, state=state.FAIL, skip_if_finished=True)
        else:
            self.study.tell(number, values if self.multi_objective else values[0], skip_if_finished=True)

    def _values_of(self, trial):
        if self.multi_objective:
            values = []
            for name in self.objective_names:
                value = trial.metrics.get_last_value(name) if trial.metrics.exists(name) else None
                values.append(value)
        else:
            values = [trial.score]
        if any(v is None or math.isnan(float(v)) for v in values):
            return None
        return [float(v) for v in values]

    def get_best_trials(self, num_trials=1):
        """The best trials; a pruned trial ranks after every unpruned completed one."""
        best = super().get_best_trials(num_trials=len(self.trials))
        unpruned = [t for t in best if t.trial_id not in self._pruned]
        pruned = [t for t in best if t.trial_id in self._pruned]
        ordered = [t for t in unpruned if t.status == _COMPLETED] + pruned + [
            t for t in unpruned if t.status != _COMPLETED]
        return ordered[:num_trials]

    def remaining_trials(self):
        """Trials left to start, counted over the whole study (all workers)."""
        if self.max_trials is None:
            return None
        return max(0, self.max_trials - len(self._counted(self.study.get_trials(deepcopy=False))))

    def pareto_front(self) -> list[ParetoTrial]:
        """The non-dominated completed trials (Optuna's `study.best_trials`).

        For one objective, the best trial(s). Trials of other searches in the
        same study are included (their `trial_id` is theirs).

        Returns:
            A list of `ParetoTrial`, by Optuna trial number.
        """
        out = []
        for t in sorted(self.study.best_trials, key=lambda t: t.number):
            tag = t.user_attrs.get(TAG_KEY) or {}
            values = t.user_attrs.get(VALUES_KEY)
            if values is None:
                values = suggest_hyperparameters(_import_optuna().trial.FixedTrial(t.params),
                                                 self.hyperparameters)
            out.append(ParetoTrial(trial_id=tag.get("trial_id", str(t.number)), number=t.number,
                                   hyperparameters=dict(values),
                                   values=dict(zip(self.objective_names, t.values))))
        return out

    # -- resume: make the project files agree with the storage ----------------------
    def _reconcile(self):
        optuna = _import_optuna()
        state = optuna.trial.TrialState
        study = self.study
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        mine = {n: t for n, t in frozen.items() if (t.user_attrs.get(TAG_KEY) or {}).get("owner") == self._owner}
        by_kt_id = {t.user_attrs[TAG_KEY]["trial_id"]: n for n, t in mine.items()}
        changed = False
        # Trials whose trial.json was saved but not oracle.json.
        for trial_id in self.trials:
            if trial_id not in self._numbers and trial_id in by_kt_id:
                self._numbers[trial_id] = by_kt_id[trial_id]
                changed = True
        lost = sorted(t for t, n in self._numbers.items() if n not in mine)
        if lost or any(t not in self._numbers for t in self.trials):
            raise keras_tuner.errors.FatalValueError(
                f"The trials of this Keras Tuner project ({self._study_dir[0] if self._study_dir else '?'}) "
                f"are not in the Optuna study {study.study_name!r} of storage {self._storage_repr()} "
                f"(missing: {lost or sorted(set(self.trials) - set(self._numbers))}). Resume with the "
                "storage and study the search used (an in-memory storage ends with its process), "
                "or start afresh with overwrite=True.")
        known = set(self._numbers.values())
        for number, ft in sorted(mine.items()):
            if number in known or ft.state != state.RUNNING:
                continue
            if ft.user_attrs.get(SURPLUS_KEY):
                study.tell(number, state=state.FAIL, skip_if_finished=True)
                continue
            # Created by ask() but the process died before the project saved it: adopt it.
            trial_id = ft.user_attrs[TAG_KEY]["trial_id"]
            live = self._trial_object(number)
            values = suggest_hyperparameters(live, self.hyperparameters)
            live.set_user_attr(VALUES_KEY, values)
            hps = self.hyperparameters.copy()
            hps.values = values
            trial = trial_module.Trial(hyperparameters=hps, trial_id=trial_id, status=_RUNNING)
            self.trials[trial_id] = trial
            self._numbers[trial_id] = number
            self._live[trial_id] = live
            _kt_hooks.record_values(self, trial)
            _kt_hooks.save_trial(self, trial)
            changed = True
        ongoing = {t.trial_id for t in self.ongoing_trials.values()}
        for trial_id, trial in sorted(self.trials.items()):
            ft = frozen.get(self._numbers[trial_id])
            if trial.status == _RUNNING and trial_id not in ongoing:
                if ft is not None and ft.state != state.RUNNING:
                    continue  # pragma: no cover - results are told after Keras Tuner saves them
                if trial_id not in _kt_hooks.retry_queue(self):
                    _kt_hooks.retry_queue(self).append(trial_id)
                if trial_id not in self.start_order:
                    self.start_order.append(trial_id)
                changed = True
            elif trial.status in (_COMPLETED, _FAILED) and ft is not None and ft.state == state.RUNNING:
                if trial_id not in self.end_order:
                    self.end_order.append(trial_id)
                self._tell(trial)  # Keras Tuner saved the result; Optuna did not hear it
                changed = True
        now = time.time()
        for number, ft in frozen.items():
            if ft.state == state.RUNNING and TAG_KEY not in ft.user_attrs and ft.datetime_start is not None \
                    and now - ft.datetime_start.timestamp() > self.orphan_grace_seconds:
                live = self._trial_object(number)
                live.set_user_attr(ORPHAN_KEY, True)
                study.tell(number, state=state.FAIL, skip_if_finished=True)
        self._reconciled = True
        if changed:
            self.save()

    # -- state ------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state["optuna"] = {"owner": self._owner, "study_name": self.study_name,
                           "numbers": dict(self._numbers), "pruned": dict(self._pruned)}
        return state

    def set_state(self, state):
        super().set_state(state)
        saved = state["optuna"]
        self._owner = saved["owner"]
        self._numbers = dict(saved["numbers"])
        self._pruned = dict(saved["pruned"])
        self._live = {}
        self._reconciled = False
        self._saved = True

    def save(self):
        super().save()  # atomic (AtomicOracleMixin): a kill leaves the previous oracle.json
        self._saved = True


def _open_storage(optuna, storage):
    """An `optuna.storages.BaseStorage` for a URL or storage; FatalValueError if it cannot open."""
    if isinstance(storage, optuna.storages.BaseStorage):
        return storage
    if not isinstance(storage, str):
        raise keras_tuner.errors.FatalValueError(
            "Argument `storage` must be an RDB URL (e.g. 'sqlite:///study.db') or an "
            f"optuna.storages.BaseStorage. Received: storage={storage!r}")
    engine_kwargs = {}
    if storage.startswith("sqlite"):
        # Several processes on one SQLite file wait for each other's writes.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    try:
        return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs)
    except Exception as e:
        raise keras_tuner.errors.FatalValueError(
            f"Argument `storage` cannot be opened: {type(e).__name__}: {_redact(str(e)).splitlines()[0]}. "
            f"Received: storage={_redact(storage)!r}") from None


class OptunaSearch(TrainkitTunerMixin, keras_tuner.Tuner):
    """Keras Tuner's `Tuner` driven by an `OptunaOracle` (an Optuna study).

    The tuner reports the objective to the study after every epoch, so the
    study's pruner can stop a trial at that epoch (`model.stop_training`);
    everything else is Keras Tuner's `Tuner`: `search`, `get_best_models`,
    `get_best_hyperparameters`, `results_summary`, resume with
    `overwrite=False`, and the chief-and-workers mode (the study lives in
    the chief). With `TrainkitTunerMixin`, as `GeneticSearch`: atomic files,
    live progress, objective inference (with a `make_hypermodel` HyperModel,
    `objective=None` means its objective), and `SearchFailedError` when every
    trial failed.

    Args:
        hypermodel: A `keras_tuner.HyperModel` (e.g. from `make_hypermodel`)
            or a `build(hp)` function. Defaults to `None`.
        objective: A metric name, `keras_tuner.Objective`, or a list of them
            for a multi-objective search. Defaults to `None`.
        max_trials: Trials in the study. Defaults to `20`.
        sampler, pruner, storage, study_name, seed: See `OptunaOracle`.
        hyperparameters, tune_new_entries, allow_new_entries,
        max_retries_per_trial, max_consecutive_failed_trials: As for
            `keras_tuner.RandomSearch`.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, `executions_per_trial`, ...). Pruning needs
            `executions_per_trial=1`.

    Examples:
        >>> import optuna
        >>> tuner = OptunaSearch(make_hypermodel(input_shape=(64,), num_classes=10, epochs=10),
        ...                      objective="val_accuracy", max_trials=30, seed=0,
        ...                      pruner=optuna.pruners.MedianPruner(n_warmup_steps=2),
        ...                      directory="runs", project_name="digits")
        >>> tuner.search(x, y, validation_data=(x_val, y_val))
        >>> optuna.importance.get_param_importances(tuner.oracle.study)
    """

    def __init__(self, hypermodel=None, objective=None, max_trials=20, sampler=None, pruner=None,
                 storage=None, study_name=None, seed=None, hyperparameters=None,
                 tune_new_entries=True, allow_new_entries=True, max_retries_per_trial=0,
                 max_consecutive_failed_trials=3, **kwargs):
        with fatal():
            objective = resolve_objective(objective, hypermodel)
        oracle = OptunaOracle(
            objective=objective, max_trials=max_trials, sampler=sampler, pruner=pruner,
            storage=storage, study_name=study_name, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        executions = kwargs.get("executions_per_trial", 1)
        if oracle.prunes and executions != 1:
            raise keras_tuner.errors.FatalValueError(
                "Argument `pruner` stops a trial's single fit; it needs executions_per_trial=1. "
                f"Received: executions_per_trial={executions!r}, pruner={pruner!r}")
        if storage is not None and study_name is None:  # the study is named after the project
            oracle._check_existing_study(kwargs.get("project_name") or "untitled_project")
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self._reports = not oracle.multi_objective
        if isinstance(self.oracle, OptunaOracle):  # the chief or a single process: open the study now
            self.oracle.study  # noqa: B018 - opens and validates before the first trial

    def on_epoch_end(self, trial, model, epoch, logs=None):
        super().on_epoch_end(trial, model, epoch, logs=logs)
        name = self.oracle.objective.name
        if not self._reports or not logs or name not in logs:
            return
        response = self.oracle.update_trial(
            trial.trial_id, {name: float(logs[name]), REPORT_KEY: 1.0}, step=int(epoch))
        if response is not None and response.status == _STOPPED:
            model.stop_training = True

    def pareto_front(self) -> list[ParetoTrial]:
        """The non-dominated trials of the study (see `OptunaOracle.pareto_front`)."""
        return self.oracle.pareto_front()
