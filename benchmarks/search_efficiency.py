"""Search efficiency: GeneticSearch and OptunaSearch versus Keras Tuner's own tuners.

(a) `--suite synthetic`: the oracles alone on Hartmann6 (6-D, minimum
    -3.32237) and Branin (2-D, minimum 0.397887), no training: best regret
    after 10, 25, 50, ... and `--trials` trials over `--seeds` seeds (mean,
    std, median), and the oracle's own time per trial (time spent creating
    trials, the oracle's file writes included).
(b) `--suite digits`: the default `make_hypermodel` search space (MLP on
    scikit-learn's digits, `--epochs` epochs a trial): best validation
    accuracy after `--trials` trials over `--seeds` seeds, and the training
    epochs each search spent (pruned trials stop early): for every seed, the
    epochs a tuner needed to reach random search's final best of that seed,
    as a fraction of random search's total epochs.

Tuners: `genetic`, `random`, `bayesian`, `hyperband`, and OptunaSearch with
the TPE or CMA-ES sampler (`optuna-tpe`, `optuna-cmaes`), with a
MedianPruner in the digits suite (`optuna-tpe-pruned`, `optuna-cmaes-pruned`).
Ray Tune (digits suite, `keras_trainkit.tuning.ray_tune`, on a local
`ray.init(num_cpus=2)`): `ray-asha` (random search with
`ASHAScheduler(max_t=epochs, grace_period=1, reduction_factor=3)`, `--trials`
trials) and `ray-pbt` (`PopulationBasedTraining` of `--pbt-population`
members, each trained for `trials * epochs / population` epochs, so the same
epoch budget, perturbing learning_rate, dropout and l2 every
`--pbt-interval` epochs). Ray's trials run two at a time and are not seeded
inside (the search and PBT's explore step are).
Optuna runs on an in-memory storage here (the default journal file adds its
writes to the oracle time).

Every tuner gets the same trial budget; Hyperband is capped at the same number
of trials (its budget is otherwise set in epochs). Seeds run in the same order
for every tuner.

    python benchmarks/search_efficiency.py --suite synthetic --seeds 10 --trials 100
    python benchmarks/search_efficiency.py --suite digits --seeds 5 --trials 20
    python benchmarks/search_efficiency.py --smoke
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from _common import machine, write_json  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CHECKPOINTS = (10, 25, 50, 100, 200)  # regret after this many trials (the synthetic suite)
TUNERS = ("genetic", "random", "bayesian", "hyperband", "optuna-tpe", "optuna-cmaes",
          "optuna-tpe-pruned", "optuna-cmaes-pruned", "ray-asha", "ray-pbt")
# Pruning needs epochs: the synthetic suite runs the unpruned Optuna samplers only.
# Ray Tune runs (`ray-*`, digits only) are asked for by name.
DEFAULT_TUNERS = {"synthetic": TUNERS[:6], "digits": TUNERS[:8]}


def optuna_kwargs(kind, seed):
    """OptunaSearch/OptunaOracle arguments of an `optuna-*` tuner."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "cmaes" in kind:
        # Categorical and conditional parameters fall back to independent (random) sampling.
        sampler = optuna.samplers.CmaEsSampler(seed=seed + 1, warn_independent_sampling=False)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed + 1)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if kind.endswith("-pruned") else None
    return {"sampler": sampler, "pruner": pruner, "storage": optuna.storages.InMemoryStorage(),
            "study_name": "bench"}


def make_oracle(kind, objective, trials, seed, space):
    import keras_tuner

    from keras_trainkit.tuning import GeneticOracle

    if kind == "genetic":
        return GeneticOracle(objective=objective, max_trials=trials, seed=seed, hyperparameters=space)
    if kind.startswith("optuna"):
        from keras_trainkit.tuning import OptunaOracle

        return OptunaOracle(objective=objective, max_trials=trials, hyperparameters=space,
                            **optuna_kwargs(kind, seed))
    if kind == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective=objective, max_trials=trials, seed=seed + 1,
                                                      hyperparameters=space)
    if kind == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(objective=objective, max_trials=trials,
                                                              seed=seed + 1, hyperparameters=space)
    oracle = keras_tuner.oracles.HyperbandOracle(objective=objective, max_epochs=27, factor=3,
                                                 hyperband_iterations=100, seed=seed + 1,
                                                 hyperparameters=space)
    oracle.max_trials = trials  # same trial budget as the others
    return oracle


@contextlib.contextmanager
def _quiet_gp():
    """BayesianOptimization's Gaussian process warns when L-BFGS stops early."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def _timed(oracle):
    """Counts the seconds the oracle spends creating trials."""
    original = oracle.create_trial
    oracle.seconds = 0.0

    def create_trial(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            oracle.seconds += time.perf_counter() - t0

    oracle.create_trial = create_trial
    return oracle


def synthetic(args):
    import keras_tuner
    from _tuning_toys import (
        BRANIN_OPT,
        HARTMANN6_OPT,
        FunctionTuner,
        branin_objective,
        branin_space,
        hartmann6_objective,
        hartmann6_space,
    )

    problems = {"hartmann6": (hartmann6_objective, hartmann6_space, HARTMANN6_OPT),
                "branin": (branin_objective, branin_space, BRANIN_OPT)}
    results = {}
    for pname, (fn, space, optimum) in problems.items():
        for kind in args.tuners:
            regrets, per_trial, curves = [], [], []
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as d:
                    oracle = _timed(make_oracle(kind, keras_tuner.Objective("score", "min"), args.trials, seed, space()))
                    tuner = FunctionTuner(fn, oracle=oracle, directory=d, project_name="p", overwrite=True)
                    tuner.oracle.verbose = 0
                    with _quiet_gp():
                        tuner.search(verbose=0)
                    scores = [tuner.oracle.trials[t].score for t in sorted(tuner.oracle.trials)]
                    scores = [math.inf if s is None else s for s in scores]
                    regrets.append(min(scores) - optimum)
                    curves.append([min(scores[:n]) - optimum for n in CHECKPOINTS if n <= len(scores)])
                    per_trial.append(oracle.seconds / max(1, len(tuner.oracle.trials)))
            results[f"{pname}/{kind}"] = {
                "problem": pname, "tuner": kind, "regret_mean": statistics.mean(regrets),
                "regret_std": statistics.pstdev(regrets), "regret_median": statistics.median(regrets),
                "oracle_ms_per_trial": 1000 * statistics.mean(per_trial), "regrets": regrets,
                "regret_curve": {n: statistics.mean(c[i] for c in curves)
                                 for i, n in enumerate(CHECKPOINTS) if all(len(c) > i for c in curves)}}
            print(f"{pname:10s} {kind:10s} regret {statistics.mean(regrets):.4f} ± "
                  f"{statistics.pstdev(regrets):.4f}  oracle {1000 * statistics.mean(per_trial):.1f} ms/trial",
                  flush=True)
    checkpoints = [n for n in CHECKPOINTS if n < args.trials]
    lines = ["| problem | tuner | " + " | ".join(f"mean regret after {n}" for n in checkpoints)
             + " | best regret, mean ± std | median | oracle ms per trial |",
             "|---|---|" + "---|" * len(checkpoints) + "---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['problem']} | {r['tuner']} | "
                     + "".join(f"{r['regret_curve'][n]:.4f} | " for n in checkpoints)
                     + f"{r['regret_mean']:.4f} ± {r['regret_std']:.4f} | "
                     f"{r['regret_median']:.4f} | {r['oracle_ms_per_trial']:.1f} |")
    return results, "\n".join(lines)


class _EpochLog:
    """Epochs and val_accuracy of every fit (shared across Keras Tuner's deep copies)."""

    def __new__(cls):
        import keras

        class Log(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.fits = []

            def __deepcopy__(self, memo):
                return self

            def on_train_begin(self, logs=None):
                self.fits.append([])

            def on_epoch_end(self, epoch, logs=None):
                self.fits[-1].append(float(logs.get("val_accuracy", float("nan"))))

        return Log()


def _curve(fits):
    """(cumulative epochs, best val_accuracy so far) after each fit."""
    out, epochs, best = [], 0, float("-inf")
    for fit in fits:
        epochs += len(fit)
        if fit:
            best = max(best, max(fit))
        out.append((epochs, best))
    return out


def _ray_search(kind, seed, args, data):
    """One Ray Tune search on digits; returns its curve in the order epochs ended."""
    import random

    import _ray_helpers
    import ray
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    from keras_trainkit.tuning import make_hypermodel
    from keras_trainkit.tuning.ray_tune import param_space, trainable, tune_config

    if not ray.is_initialized():
        ray.cloudpickle.register_pickle_by_value(_ray_helpers)  # the epoch log, in the workers
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    x, y, xv, yv = data
    random.seed(seed)  # PBT's explore step
    if kind == "ray-asha":
        epochs, samples = args.epochs, args.trials
        scheduler = tune.schedulers.ASHAScheduler(max_t=epochs, grace_period=1, reduction_factor=3)
    else:
        samples = args.pbt_population
        epochs = args.trials * args.epochs // samples  # the same epoch budget
        scheduler = tune.schedulers.PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=args.pbt_interval,
            hyperparam_mutations={"learning_rate": tune.loguniform(1e-4, 1e-1),
                                  "dropout": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5],
                                  "l2": tune.loguniform(1e-8, 1e-2)})
    hypermodel = make_hypermodel((64,), 10, epochs=epochs, early_stopping_patience=None)
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "epochs")
        os.makedirs(log)
        tuner = tune.Tuner(
            trainable(hypermodel, x, y, validation_data=(xv, yv),
                      callbacks=[_ray_helpers.RateRecorder(log, per_update=False)]),
            param_space=param_space(hypermodel),
            tune_config=tune_config(hypermodel, num_samples=samples, reuse_actors=True, scheduler=scheduler,
                                    search_alg=BasicVariantGenerator(random_state=seed + 1)),
            run_config=tune.RunConfig(storage_path=d, verbose=0))
        grid = tuner.fit()
        if grid.errors:
            raise RuntimeError(f"{kind} seed {seed}: {len(grid.errors)} trials failed: {grid.errors[0]}")
        records = sorted(_ray_helpers.read_epochs(log), key=lambda r: r["time"])
    curve, best = [], float("-inf")
    for i, record in enumerate(records, 1):
        best = max(best, record["val_accuracy"])
        curve.append((i, best))
    return curve


def digits(args):
    import keras
    import keras_tuner

    from keras_trainkit.data import load_digits
    from keras_trainkit.tuning import OptunaSearch, make_hypermodel

    (x, y), (xv, yv) = load_digits()
    if args.smoke:
        x, y, xv, yv = x[:200], y[:200], xv[:100], yv[:100]
    hypermodel = make_hypermodel((64,), 10, epochs=args.epochs, early_stopping_patience=None)
    objective = keras_tuner.Objective("val_accuracy", "max")
    runs = {}
    for kind in args.tuners:
        runs[kind] = []
        for seed in range(args.seeds):
            keras.utils.set_random_seed(seed)  # weights and shuffling: the same for every tuner
            if kind.startswith("ray-"):
                runs[kind].append(_ray_search(kind, seed, args, (x, y, xv, yv)))
                print(f"digits {kind} seed {seed}: best {runs[kind][-1][-1][1]:.4f} after "
                      f"{runs[kind][-1][-1][0]} epochs", flush=True)
                continue
            with tempfile.TemporaryDirectory() as d:
                if kind.startswith("optuna"):
                    tuner = OptunaSearch(hypermodel, objective=objective, max_trials=args.trials, directory=d,
                                         project_name="p", overwrite=True, **optuna_kwargs(kind, seed))
                elif kind == "hyperband":
                    # Keras Tuner's Hyperband tuner: its run_trial trains each
                    # trial for the bracket's epochs and continues a promoted one
                    # from its parent's weights (the base Tuner would train every
                    # trial for the full --epochs).
                    tuner = keras_tuner.Hyperband(hypermodel, objective=objective, max_epochs=args.epochs, factor=3,
                                                  hyperband_iterations=100, seed=seed + 1, directory=d,
                                                  project_name="p", overwrite=True)
                    tuner.oracle.max_trials = args.trials  # the same trial budget as the others
                else:
                    oracle = make_oracle(kind, objective, args.trials, seed, keras_tuner.HyperParameters())
                    tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, directory=d, project_name="p",
                                              overwrite=True)
                log = _EpochLog()
                with _quiet_gp():
                    tuner.search(x, y, validation_data=(xv, yv), callbacks=[log], verbose=0)
                runs[kind].append(_curve(log.fits))
    results = {}
    for kind, curves in runs.items():
        bests = [c[-1][1] for c in curves]
        epochs = [c[-1][0] for c in curves]
        entry = {"tuner": kind, "best_mean": statistics.mean(bests), "best_std": statistics.pstdev(bests),
                 "bests": bests, "epochs": epochs, "curves": curves}
        if "random" in runs:
            fractions = []
            for curve, reference in zip(curves, runs["random"]):
                target, total = reference[-1][1], reference[-1][0]
                reached = [e for e, b in curve if b >= target]
                fractions.append(reached[0] / total if reached else None)
            entry["fraction_of_random_epochs"] = fractions
        results[kind] = entry
        print(f"digits {kind:20s} best val_accuracy {entry['best_mean']:.4f} ± {entry['best_std']:.4f}  "
              f"epochs {statistics.mean(epochs):.0f}  to random's best: {entry.get('fraction_of_random_epochs')}",
              flush=True)
    lines = ["| tuner | best val_accuracy, mean ± std | per seed | epochs spent (mean) | "
             "epochs to reach random's final best, fraction of random's epochs, per seed |", "|---|---|---|---|---|"]
    for r in results.values():
        fractions = r.get("fraction_of_random_epochs") or []
        lines.append(f"| {r['tuner']} | {r['best_mean']:.4f} ± {r['best_std']:.4f} | "
                     + ", ".join(f"{b:.3f}" for b in r["bests"]) + f" | {statistics.mean(r['epochs']):.0f} | "
                     + ", ".join("not reached" if f is None else f"{f:.2f}" for f in fractions) + " |")
    return results, "\n".join(lines)


def budget_table(results: dict, budgets: list[int]) -> str:
    """Best val_accuracy within each budget of training epochs (mean over seeds,
    from the saved best-so-far curves; a search that had spent fewer epochs
    than a budget counts with its final best)."""
    def best_within(curve, budget):
        bests = [b for e, b in curve if e <= budget]
        return bests[-1] if bests else float("nan")

    header = "| tuner | epochs spent, mean | " + " | ".join(f"best within {b} epochs" for b in budgets) + " |"
    lines = [header, "|---" * (len(budgets) + 2) + "|"]
    for kind, r in results.items():
        cells = []
        for b in budgets:
            values = [best_within(c, b) for c in r["curves"]]
            cells.append(f"{statistics.mean(values):.4f}" if all(v == v for v in values)
                         else f"{statistics.mean([v for v in values if v == v] or [float('nan')]):.4f} "
                              f"({sum(v == v for v in values)} of {len(values)} seeds)")
        lines.append(f"| {kind} | {statistics.mean(r['epochs']):.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget-table", metavar="JSON", default=None,
                        help="print the best-within-epochs table of a saved digits run and exit")
    parser.add_argument("--budgets", default="20,40,60,120", help="epoch budgets of --budget-table")
    parser.add_argument("--suite", choices=["synthetic", "digits"], default="synthetic")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tuners", default=None, help="comma-separated; default: all of the suite's")
    parser.add_argument("--pbt-population", type=int, default=4, help="ray-pbt: members")
    parser.add_argument("--pbt-interval", type=int, default=2, help="ray-pbt: epochs between perturbations")
    parser.add_argument("--smoke", action="store_true", help="2 seeds, a few trials")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.budget_table:
        with open(args.budget_table) as f:
            saved = json.load(f)
        table = budget_table(saved["results"], [int(b) for b in args.budgets.split(",")])
        print(table)
        return table
    args.tuners = [t for t in (args.tuners or ",".join(DEFAULT_TUNERS[args.suite])).split(",") if t]
    unknown = set(args.tuners) - set(TUNERS)
    if unknown:
        raise ValueError(f"Argument `--tuners` has unknown names {sorted(unknown)}; choose from {TUNERS}.")
    if args.suite == "synthetic" and any(t.startswith("ray-") for t in args.tuners):
        raise ValueError(f"Argument `--tuners`: the Ray Tune runs train; the synthetic suite does not. "
                         f"Received: --tuners={','.join(args.tuners)}")
    if args.suite == "synthetic" and any(t.endswith("-pruned") for t in args.tuners):
        raise ValueError(f"Argument `--tuners`: pruning needs epochs; the synthetic suite has none. "
                         f"Received: --tuners={','.join(args.tuners)}")
    defaults = {"synthetic": (10, 100), "digits": (5, 20)}[args.suite]
    args.seeds = args.seeds or (2 if args.smoke else defaults[0])
    args.trials = args.trials or (4 if args.smoke else defaults[1])
    if args.smoke:
        args.epochs = 1
    results, table = (synthetic if args.suite == "synthetic" else digits)(args)
    print(table)
    out = args.out or os.path.join(HERE, "results", f"search_efficiency_{args.suite}.json")
    write_json(out, {"benchmark": "search_efficiency", "suite": args.suite, "machine": machine(),
                     "seeds": args.seeds, "trials": args.trials, "epochs": args.epochs,
                     "command": "python benchmarks/search_efficiency.py " + " ".join(argv or sys.argv[1:]),
                     "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
