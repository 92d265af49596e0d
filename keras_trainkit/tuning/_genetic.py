"""A genetic (evolutionary) search for Keras Tuner: `GeneticOracle`, `GeneticSearch`."""

from __future__ import annotations

import math
import random
from typing import Any

import keras_tuner
import numpy as np
from keras_tuner.engine import hyperparameters as hp_module
from keras_tuner.engine import trial as trial_module

from keras_trainkit.tuning._atomic import AtomicOracleMixin
from keras_trainkit.tuning._errors import fatal
from keras_trainkit.tuning._progress import install_display
from keras_trainkit.tuning._tuner import TrainkitTunerMixin, resolve_objective

_MAX_ATTEMPTS = 50


class GeneticOracle(AtomicOracleMixin, keras_tuner.Oracle):
    """Steady-state genetic algorithm over any Keras Tuner search space.

    The first `population_size` trials are random. Each later trial is a child:
    two parents are picked by tournament selection (`tournament_size`
    contestants, the best by the objective's direction wins) from the
    population, which is the `population_size` most recently completed trials
    plus the `elitism` best trials ever (so the best are never lost). With
    probability `crossover_rate` the child takes each hyperparameter from
    either parent at random (uniform crossover), else it clones the first.
    Then each active hyperparameter mutates with probability `mutation_rate`:

    - `Float`/`Int`: a Gaussian step of `mutation_scale` in Keras Tuner's
      cumulative-probability space, so a log-scale range mutates in log space,
      the result stays in `[min_value, max_value]` and on `step`;
    - `Choice`: another value (a neighbour when `ordered=True`);
    - `Boolean`: flipped. `Fixed` never changes.

    Conditional hyperparameters follow the child's own values: a parameter is
    set only when its condition holds, taken from whichever parent has it
    active, or sampled at random when neither does. A child identical to an
    earlier trial is mutated again (up to 50 tries, then a random individual);
    when no new configuration can be found the search stops.

    Randomness comes from `numpy.random.default_rng([seed, trial_number,
    attempt])`: nothing to carry between trials, the same seed (0 included)
    gives the same search, and a search resumed from its project directory
    (`overwrite=False`) continues exactly where it stopped. The population is
    derived from the completed trials and their completion order, which Keras
    Tuner saves; `get_state`/`set_state` add the algorithm's settings. The
    oracle runs in the chief in Keras Tuner's distributed mode. Its files
    (`oracle.json`, `trial.json`) are written atomically (`AtomicOracleMixin`),
    and its progress display adds "trial i of N" and the time left.

    Args:
        objective: As for any Keras Tuner oracle.
        max_trials: Total number of trials. Defaults to `20`.
        population_size: Random initial trials and size of the recent
            population, an int >= 2. Defaults to `10`.
        tournament_size: Contestants per tournament, an int >= 1. Defaults to `3`.
        crossover_rate: Probability of crossover, in [0, 1]. Defaults to `0.9`.
        mutation_rate: Per-hyperparameter mutation probability, in [0, 1].
            Defaults to `0.2`.
        mutation_scale: Standard deviation of numeric mutations in probability
            space, in (0, 1]. Defaults to `0.1`.
        elitism: Best trials always kept in the population, an int >= 0.
            Defaults to `2`.
        seed: Random seed (any int, 0 included); `None` draws one. Defaults to `None`.
        hyperparameters: As for `keras_tuner.Oracle`.
        allow_new_entries: As for `keras_tuner.Oracle`.
        tune_new_entries: As for `keras_tuner.Oracle`.
        max_retries_per_trial: As for `keras_tuner.Oracle`.
        max_consecutive_failed_trials: As for `keras_tuner.Oracle`.
    """

    def __init__(self, objective=None, max_trials=20, population_size=10, tournament_size=3,
                 crossover_rate=0.9, mutation_rate=0.2, mutation_scale=0.1, elitism=2, seed=None,
                 hyperparameters=None, allow_new_entries=True, tune_new_entries=True,
                 max_retries_per_trial=0, max_consecutive_failed_trials=3):
        settings = _check_settings(max_trials=max_trials, population_size=population_size,
                                   tournament_size=tournament_size, crossover_rate=crossover_rate,
                                   mutation_rate=mutation_rate, mutation_scale=mutation_scale,
                                   elitism=elitism, seed=seed)
        if settings["seed"] is None:
            settings["seed"] = random.randint(0, 2**31 - 1)
        super().__init__(objective=objective, max_trials=max_trials, hyperparameters=hyperparameters,
                         allow_new_entries=allow_new_entries, tune_new_entries=tune_new_entries,
                         seed=settings["seed"], max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        # keras_tuner.Oracle replaces a falsy seed (0) by a random one.
        self.seed = settings["seed"]
        self._seed_state = self.seed
        self.genetic_settings = {k: settings[k] for k in (
            "population_size", "tournament_size", "crossover_rate", "mutation_rate",
            "mutation_scale", "elitism")}
        install_display(self)

    # -- the algorithm ------------------------------------------------------------
    def populate_space(self, trial_id):
        number = int(trial_id)
        scored = self._scored_trials()
        initial = number < self.genetic_settings["population_size"] or len(scored) < 2
        for attempt in range(_MAX_ATTEMPTS + 10):
            rng = np.random.default_rng([self.seed, number, attempt])
            if initial or attempt >= _MAX_ATTEMPTS:
                values = self._random_individual(rng)
            else:
                values = self._child(rng, scored, extra_mutation=attempt)
            if not self._duplicate(values):
                return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        return {"status": trial_module.TrialStatus.STOPPED, "values": None}

    def population(self) -> list[trial_module.Trial]:
        """The parents' pool: recent completed trials plus the elite."""
        return self._pool(self._scored_trials())

    def _scored_trials(self):
        out = []
        for trial_id in self.end_order:
            trial = self.trials.get(trial_id)
            if trial is None or trial.status != trial_module.TrialStatus.COMPLETED:
                continue
            if trial.score is None or not math.isfinite(trial.score):
                continue
            out.append(trial)
        return out

    def _better(self, a, b) -> bool:
        if self.objective.direction == "max":
            return a.score > b.score
        return a.score < b.score

    def _pool(self, scored):
        s = self.genetic_settings
        recent = scored[-s["population_size"]:]
        key = (lambda t: -t.score) if self.objective.direction == "max" else (lambda t: t.score)
        elite = sorted(scored, key=key)[: s["elitism"]]
        pool = list(recent)
        for trial in elite:
            if all(trial is not p for p in pool):
                pool.append(trial)
        return pool

    def _tournament(self, rng, pool):
        size = min(self.genetic_settings["tournament_size"], len(pool))
        contestants = [pool[i] for i in rng.choice(len(pool), size=size, replace=False)]
        best = contestants[0]
        for trial in contestants[1:]:
            if self._better(trial, best):
                best = trial
        return best

    def _child(self, rng, scored, extra_mutation=0):
        s = self.genetic_settings
        pool = self._pool(scored)
        first = self._tournament(rng, pool)
        second = self._tournament(rng, pool)
        crossover = rng.random() < s["crossover_rate"]
        rate = min(1.0, s["mutation_rate"] * (1 + extra_mutation))
        hps = hp_module.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            if crossover and rng.random() < 0.5:
                candidates = [second, first]  # uniform crossover: this gene from the second parent
            else:
                candidates = [first, second]
            value = None
            for parent in candidates:
                if parent.hyperparameters.is_active(hp) and hp.name in parent.hyperparameters.values:
                    value = parent.hyperparameters.values[hp.name]
                    break
            if value is None:
                value = hp.random_sample(int(rng.integers(2**31)))
            elif rng.random() < rate:
                value = self._mutate(rng, hp, value, scale=s["mutation_scale"] * (1 + extra_mutation / 10))
            hps.values[hp.name] = value
        return hps.values

    def _random_individual(self, rng):
        hps = hp_module.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = hp.random_sample(int(rng.integers(2**31)))
        return hps.values

    @staticmethod
    def _mutate(rng, hp, value, scale):
        if isinstance(hp, hp_module.Fixed):
            return value
        if isinstance(hp, hp_module.Boolean):
            return not value
        if isinstance(hp, hp_module.Choice):
            values = list(hp.values)
            if len(values) < 2:
                return value
            index = values.index(value) if value in values else 0
            if hp.ordered:
                step = 1 if rng.random() < 0.5 else -1
                if not 0 <= index + step < len(values):
                    step = -step
                return values[index + step]
            return values[int(rng.choice([i for i in range(len(values)) if i != index]))]
        # Float and Int: a Gaussian step in cumulative-probability space.
        prob = hp.value_to_prob(value)
        new = float(np.clip(prob + rng.normal(0.0, scale), 0.0, 1.0 - 1e-9))
        mutated = hp.prob_to_value(new)
        step = getattr(hp, "step", None) or (1 if isinstance(hp, hp_module.Int) else None)
        if mutated == value and step:
            # Too small a move to leave the grid point: go to a neighbour.
            up, down = value + step, value - step
            options = [c for c in ((up, down) if new >= prob else (down, up))
                       if hp.min_value <= c <= hp.max_value]
            if options:
                mutated = type(value)(options[0])
        return mutated

    # -- state ----------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        state["genetic"] = dict(self.genetic_settings, seed=self.seed)
        return state

    def set_state(self, state):
        super().set_state(state)
        genetic = dict(state["genetic"])
        self.seed = genetic.pop("seed")
        self.genetic_settings = genetic


def _check_settings(**kwargs) -> dict[str, Any]:
    from keras_trainkit import _validation as v

    with fatal():
        max_trials = kwargs["max_trials"]
        if max_trials is not None:
            v.integer("max_trials", max_trials, low=1)
        population_size = v.integer("population_size", kwargs["population_size"], low=2)
        tournament_size = v.integer("tournament_size", kwargs["tournament_size"], low=1)
        if tournament_size > population_size:
            raise ValueError(
                f"Argument `tournament_size` must be <= population_size ({population_size}): a "
                f"tournament draws distinct contestants from the population. Received: "
                f"tournament_size={tournament_size!r}, population_size={population_size!r}")
        elitism = v.integer("elitism", kwargs["elitism"], low=0)
        if elitism > population_size:
            raise ValueError(
                f"Argument `elitism` must be <= population_size ({population_size}). "
                f"Received: elitism={elitism!r}")
        seed = kwargs["seed"]
        if seed is not None:
            v.integer("seed", seed, low=0)
        return {
            "population_size": population_size,
            "tournament_size": tournament_size,
            "crossover_rate": v.real("crossover_rate", kwargs["crossover_rate"], low=0.0, high=1.0),
            "mutation_rate": v.real("mutation_rate", kwargs["mutation_rate"], low=0.0, high=1.0),
            "mutation_scale": v.real("mutation_scale", kwargs["mutation_scale"], low=0.0, high=1.0,
                                     low_inclusive=False),
            "elitism": elitism,
            "seed": seed,
        }


class GeneticSearch(TrainkitTunerMixin, keras_tuner.Tuner):
    """Keras Tuner's `Tuner` driven by a `GeneticOracle`.

    With `TrainkitTunerMixin`: every file it writes is written atomically, it
    shows live progress (trial i of N, hyperparameters, epochs, score, best so
    far, elapsed and estimated time left; `search(verbose=0)` silences it),
    leaves `batch_size` out of a `make_hypermodel` space when the data is
    pre-batched, and raises `SearchFailedError` with the first trial's error
    when every trial failed.

    Args:
        hypermodel: A `keras_tuner.HyperModel` (e.g. from `make_hypermodel`) or
            a `build(hp)` function. Defaults to `None`.
        objective: Name or `keras_tuner.Objective`. With a `make_hypermodel`
            HyperModel, `None` means `hypermodel.objective` and a name must be
            a metric the model compiles; a name's direction is inferred by
            `metric_direction`. Defaults to `None`.
        max_trials: Total number of trials. Defaults to `20`.
        population_size: See `GeneticOracle`.
        tournament_size: See `GeneticOracle`.
        crossover_rate: See `GeneticOracle`.
        mutation_rate: See `GeneticOracle`.
        mutation_scale: See `GeneticOracle`.
        elitism: See `GeneticOracle`.
        seed: See `GeneticOracle`.
        hyperparameters: As for `keras_tuner.RandomSearch`.
        tune_new_entries: As for `keras_tuner.RandomSearch`.
        allow_new_entries: As for `keras_tuner.RandomSearch`.
        max_retries_per_trial: As for `keras_tuner.RandomSearch`.
        max_consecutive_failed_trials: As for `keras_tuner.RandomSearch`.
        **kwargs: `keras_tuner.Tuner` arguments (`directory`, `project_name`,
            `overwrite`, `executions_per_trial`, ...).

    Examples:
        >>> tuner = GeneticSearch(make_hypermodel(input_shape=(64,), num_classes=10),
        ...                       objective="val_accuracy", max_trials=30, seed=0)
        >>> tuner.search(x, y, validation_data=(x_val, y_val), epochs=10)
    """

    def __init__(self, hypermodel=None, objective=None, max_trials=20, population_size=10,
                 tournament_size=3, crossover_rate=0.9, mutation_rate=0.2, mutation_scale=0.1,
                 elitism=2, seed=None, hyperparameters=None, tune_new_entries=True,
                 allow_new_entries=True, max_retries_per_trial=0, max_consecutive_failed_trials=3,
                 **kwargs):
        with fatal():
            objective = resolve_objective(objective, hypermodel)
        oracle = GeneticOracle(
            objective=objective, max_trials=max_trials, population_size=population_size,
            tournament_size=tournament_size, crossover_rate=crossover_rate,
            mutation_rate=mutation_rate, mutation_scale=mutation_scale, elitism=elitism, seed=seed,
            hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials)
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
