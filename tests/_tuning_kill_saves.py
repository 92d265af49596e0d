"""Kills processes in the middle of tuner/oracle/checkpoint saves; run by test_tuning_files.py.

    python tests/_tuning_kill_saves.py DIR KILLS

One process builds two finished searches over the same 40 trials: one with
keras_trainkit's atomic files (Keras Tuner's RandomSearchOracle and tuner,
made atomic by TrainkitTunerMixin), one with Keras Tuner's own writer. For
each, it forks KILLS children that save the oracle, a trial and the tuner in
a loop, SIGKILLs each after a random delay, and checks that every file still
parses and that a new tuner reloads the project (as a restarted process
would). The same is done for a 2 MB best-epoch checkpoint written by Keras
Tuner's `SaveBestEpoch` (atomic via keras_trainkit, and plain). Prints a
JSON summary on its last line.
"""

import json
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras_tuner  # noqa: E402
from _tuning_toys import FunctionTuner, hartmann6_objective, hartmann6_space  # noqa: E402

from keras_trainkit.tuning import (  # noqa: E402
    TrainkitTunerMixin,  # noqa: E402
    _atomic,
    _kt_hooks,
)


class SafeFunctionTuner(TrainkitTunerMixin, FunctionTuner):
    saves = 0

    def get_state(self):  # changes at every save, so that no save is skipped as unchanged
        return {**super().get_state(), "saves": self.saves}


class PlainFunctionTuner(FunctionTuner):
    saves = 0

    def get_state(self):
        return {**super().get_state(), "saves": self.saves}


def make(kind, directory, overwrite=True):
    cls = SafeFunctionTuner if kind == "ours" else PlainFunctionTuner
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("score", "min"), max_trials=40, seed=1,
        hyperparameters=hartmann6_space())
    tuner = cls(hartmann6_objective, oracle=oracle, directory=directory, project_name="p",
                overwrite=overwrite)
    tuner.oracle.verbose = 0
    return tuner


def files_ok(directory, trial_id):
    project = os.path.join(directory, "p")
    paths = [os.path.join(project, "oracle.json"), os.path.join(project, "tuner0.json"),
             os.path.join(project, f"trial_{trial_id}", "trial.json")]
    for path in paths:
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError):
            return False
    return True


def reloads(kind, directory):
    try:
        tuner = make(kind, directory, overwrite=False)
    except Exception:
        return False
    return len(tuner.oracle.trials) == 40


def kill_json_saves(kind, directory, kills, rng):
    tuner = make(kind, directory)
    tuner.search(verbose=0)
    trial = tuner.oracle.trials[sorted(tuner.oracle.trials)[7]]
    bad = not_reloaded = 0
    saves_done = []  # saves the killed child had completed: proof that it was writing
    for _ in range(kills):
        pid = os.fork()
        if pid == 0:  # the child saves until it is killed, a new state every time
            while True:
                tuner.saves += 1
                tuner.oracle._seed_state += 1
                trial.message = str(tuner.saves)
                tuner.oracle.save()
                tuner.oracle._save_trial(trial)
                tuner.save()
        time.sleep(rng.uniform(0.02, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        bad += not files_ok(directory, trial.trial_id)
        if files_ok(directory, trial.trial_id):
            with open(os.path.join(directory, "p", "tuner0.json")) as f:
                saves_done.append(json.load(f)["saves"])
        not_reloaded += not reloads(kind, directory)
        if not files_ok(directory, trial.trial_id):  # start the next kill from a good project
            tuner.oracle.save()
            tuner.oracle._save_trial(trial)
            tuner.save()
    return {"unreadable": bad, "not_reloadable": not_reloaded,
            "fewest_saves_before_a_kill": min(saves_done) if saves_done else None}


class SlowWeights:
    """Stands in for a Keras model: save_weights writes 2 MB of one byte, 64 kB at a time."""

    distribute_strategy = None
    fill = b"a"

    def save_weights(self, path):
        with open(path, "wb") as f:
            for _ in range(32):
                f.write(self.fill * 65536)
                f.flush()


def kill_checkpoint_saves(kind, directory, kills, rng):
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "checkpoint.weights.h5")
    callback = _kt_hooks.SaveBestEpoch(keras_tuner.Objective("score", "min"), path)
    if kind == "ours":
        _atomic.make_checkpoints_atomic([callback])
    model = SlowWeights()
    model.distribute_strategy = tf.distribute.get_strategy()
    callback.set_model(model)
    callback._save_model()
    torn = 0
    for k in range(kills):
        pid = os.fork()
        if pid == 0:
            model.fill = b"b" if k % 2 == 0 else b"c"
            while True:
                callback._save_model()
        time.sleep(rng.uniform(0.005, 0.05))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with open(path, "rb") as f:
            data = f.read()
        if len(data) != 32 * 65536 or len(set(data)) != 1:
            torn += 1
            callback._save_model()
    return {"torn": torn}


def main():
    directory, kills = sys.argv[1], int(sys.argv[2])
    rng = random.Random(0)
    out = {}
    for kind in ("ours", "keras_tuner"):
        out[kind] = kill_json_saves(kind, os.path.join(directory, kind), kills, rng)
        out[kind].update(kill_checkpoint_saves(kind, os.path.join(directory, kind + "_ckpt"), kills, rng))
        out[kind]["oracle_class"] = type(make(kind, os.path.join(directory, kind), overwrite=False).oracle).__name__
    print(json.dumps(out))


if __name__ == "__main__":
    main()
