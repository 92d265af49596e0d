"""Worker process for tests/test_optuna_processes.py.

    python _optuna_worker.py resume DIRECTORY STORAGE KILL_AT OVERWRITE LOG
    python _optuna_worker.py concurrent DIRECTORY STORAGE LOG
    python _optuna_worker.py distributed DIRECTORY LOG   (KERASTUNER_* variables set)

Every evaluated configuration is appended to LOG as one JSON line.
"""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import optuna  # noqa: E402
from _optuna_toys import EpochTuner, objective  # noqa: E402
from _tuning_toys import hartmann6_objective, hartmann6_space  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)


def logged(log, fn, kill_at=None, sleep=0.0):
    seen = []

    def score(values, epoch):
        if epoch == 0:
            seen.append(1)
            with open(log, "a") as f:
                f.write(json.dumps(values, sort_keys=True) + "\n")
            if kill_at is not None and len(seen) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(sleep)
        return fn(values, epoch)

    return score


def main():
    mode, directory = sys.argv[1], sys.argv[2]
    if mode == "resume":
        storage, kill_at, overwrite, log = sys.argv[3], sys.argv[4], sys.argv[5] == "1", sys.argv[6]
        kill_at = None if kill_at == "none" else int(kill_at)
        tuner = EpochTuner(logged(log, lambda v, e: hartmann6_objective(v), kill_at), objective=objective(),
                           max_trials=14, seed=0, storage=storage, study_name="s", hyperparameters=hartmann6_space(),
                           directory=directory, project_name="p", overwrite=overwrite)
        tuner.oracle.verbose = 0
        tuner.search(verbose=0)
    elif mode == "concurrent":
        storage, log = sys.argv[3], sys.argv[4]
        tuner = EpochTuner(logged(log, lambda v, e: hartmann6_objective(v), sleep=0.3), objective=objective(),
                           max_trials=10, storage=storage, study_name="shared", hyperparameters=hartmann6_space(),
                           directory=directory, project_name="p")
        tuner.oracle.verbose = 0
        tuner.search(verbose=0)
    elif mode == "distributed":
        log = sys.argv[3]

        # Three epochs; configurations with x0 > 0.5 are bad from the first epoch on.
        def curve(values, epoch):
            return values["x0"] + 0.1 * (3 - epoch)

        tuner = EpochTuner(logged(log, curve, sleep=0.3), epochs=3, objective=objective(), max_trials=10,
                           seed=0, pruner=optuna.pruners.MedianPruner(n_startup_trials=3),
                           hyperparameters=hartmann6_space(), directory=directory, project_name="p")
        tuner.search(verbose=0)
        if os.environ["KERASTUNER_TUNER_ID"] == "chief":
            study = tuner.oracle.study
            print(json.dumps({
                "states": [t.state.name for t in study.trials],
                "kt": {t.trial_id: [t.status, t.message] for t in tuner.oracle.trials.values()},
                "intermediate": [len(t.intermediate_values) for t in study.trials],
            }))
        else:
            print(json.dumps({"epochs_run": tuner.epochs_run}))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
