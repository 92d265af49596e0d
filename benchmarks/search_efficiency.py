"""Search efficiency: GeneticSearch versus Keras Tuner's own tuners at equal budget.

(a) `--suite synthetic`: the oracles alone on Hartmann6 (6-D, minimum
    -3.32237) and Branin (2-D, minimum 0.397887), no training: best regret
    after `--trials` trials over `--seeds` seeds (mean, std, median), and the
    oracle's own time per trial (time spent creating trials).
(b) `--suite digits`: the default `make_hypermodel` search space (MLP on
    scikit-learn's digits, `--epochs` epochs a trial): best validation
    accuracy after `--trials` trials over `--seeds` seeds.

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

TUNERS = ("genetic", "random", "bayesian", "hyperband")


def make_oracle(kind, objective, trials, seed, space):
    import keras_tuner

    from keras_trainkit.tuning import GeneticOracle

    if kind == "genetic":
        return GeneticOracle(objective=objective, max_trials=trials, seed=seed, hyperparameters=space)
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
            regrets, per_trial = [], []
            for seed in range(args.seeds):
                with tempfile.TemporaryDirectory() as d:
                    oracle = _timed(make_oracle(kind, keras_tuner.Objective("score", "min"), args.trials, seed, space()))
                    tuner = FunctionTuner(fn, oracle=oracle, directory=d, project_name="p", overwrite=True)
                    tuner.oracle.verbose = 0
                    with _quiet_gp():
                        tuner.search(verbose=0)
                    scores = [t.score for t in tuner.oracle.trials.values() if t.score is not None]
                    regrets.append(min(scores) - optimum)
                    per_trial.append(oracle.seconds / max(1, len(tuner.oracle.trials)))
            results[f"{pname}/{kind}"] = {
                "problem": pname, "tuner": kind, "regret_mean": statistics.mean(regrets),
                "regret_std": statistics.pstdev(regrets), "regret_median": statistics.median(regrets),
                "oracle_ms_per_trial": 1000 * statistics.mean(per_trial), "regrets": regrets}
            print(f"{pname:10s} {kind:10s} regret {statistics.mean(regrets):.4f} ± "
                  f"{statistics.pstdev(regrets):.4f}  oracle {1000 * statistics.mean(per_trial):.1f} ms/trial",
                  flush=True)
    lines = ["| problem | tuner | best regret, mean ± std | median | oracle ms per trial |", "|---|---|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['problem']} | {r['tuner']} | {r['regret_mean']:.4f} ± {r['regret_std']:.4f} | "
                     f"{r['regret_median']:.4f} | {r['oracle_ms_per_trial']:.1f} |")
    return results, "\n".join(lines)


def digits(args):
    import keras_tuner

    from keras_trainkit.data import load_digits
    from keras_trainkit.tuning import make_hypermodel

    (x, y), (xv, yv) = load_digits()
    if args.smoke:
        x, y, xv, yv = x[:200], y[:200], xv[:100], yv[:100]
    hypermodel = make_hypermodel((64,), 10, epochs=args.epochs, early_stopping_patience=None)
    results = {}
    for kind in args.tuners:
        bests = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as d:
                oracle = make_oracle(kind, keras_tuner.Objective("val_accuracy", "max"), args.trials, seed,
                                     keras_tuner.HyperParameters())
                if kind == "hyperband":
                    oracle.max_epochs = args.epochs
                tuner = keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, directory=d, project_name="p",
                                          overwrite=True)
                with _quiet_gp():
                    tuner.search(x, y, validation_data=(xv, yv), verbose=0)
                bests.append(max(t.score for t in tuner.oracle.trials.values() if t.score is not None))
        results[kind] = {"tuner": kind, "best_mean": statistics.mean(bests),
                         "best_std": statistics.pstdev(bests), "bests": bests}
        print(f"digits {kind:10s} best val_accuracy {statistics.mean(bests):.4f} ± {statistics.pstdev(bests):.4f}",
              flush=True)
    lines = ["| tuner | best val_accuracy, mean ± std | per seed |", "|---|---|---|"]
    for r in results.values():
        lines.append(f"| {r['tuner']} | {r['best_mean']:.4f} ± {r['best_std']:.4f} | "
                     + ", ".join(f"{b:.3f}" for b in r["bests"]) + " |")
    return results, "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=["synthetic", "digits"], default="synthetic")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--tuners", default=",".join(TUNERS))
    parser.add_argument("--smoke", action="store_true", help="2 seeds, a few trials")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    args.tuners = [t for t in args.tuners.split(",") if t]
    unknown = set(args.tuners) - set(TUNERS)
    if unknown:
        raise ValueError(f"Argument `--tuners` has unknown names {sorted(unknown)}; choose from {TUNERS}.")
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
