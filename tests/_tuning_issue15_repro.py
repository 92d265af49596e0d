"""The measurements quoted in issue 15 and its report, re-runnable on any checkout.

    python tests/_tuning_issue15_repro.py batched      # cosine over a batched digits dataset
    python tests/_tuning_issue15_repro.py warmup 37 4  # warm-up vs trial length, 37 sampled trials, 4 epochs
    python tests/_tuning_issue15_repro.py save-cost DIR  # per-trial cost of the atomic saves
    python tests/_tuning_kill_saves.py DIR 8           # SIGKILLs during saves (separate script)

To measure the code before the fix: `git archive <commit> | tar -x -C /tmp/old`
and run with `PYTHONPATH=/tmp/old` from /tmp/old.
"""

import math
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def batched():
    """Update count and learning rate over one epoch of digits.batch(31) (44 batches)."""
    import warnings

    import keras
    import keras_tuner
    import numpy as np
    import tensorflow as tf

    from keras_trainkit.data import load_digits
    from keras_trainkit.tuning import make_hypermodel

    warnings.simplefilter("ignore")
    (x, y), _ = load_digits()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(31)
    try:  # before the fix the tuned batch size was (silently) kept
        hm = make_hypermodel((64,), 10, epochs=1, early_stopping_patience=None,
                             search_space={"lr_schedule": "cosine", "batch_size": 32})
        hp = keras_tuner.HyperParameters()
        model = hm.build(hp)
        hm.fit(hp, model, ds.take(1), verbose=0)
    except ValueError:  # after: a pre-batched dataset sets the batch size
        hm = make_hypermodel((64,), 10, epochs=1, early_stopping_patience=None,
                             search_space={"lr_schedule": "cosine", "batch_size": None})
    hp = keras_tuner.HyperParameters()
    model = hm.build(hp)
    rates = []

    class Rates(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):  # the rate of the next update
            rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    hm.fit(hp, model, ds, verbose=0, callbacks=[Rates()])
    zero = next((i + 1 for i, r in enumerate(rates) if r <= 1e-12), None)
    print(f"{len(rates)} updates; the rate is 0 from update {zero + 1 if zero else None} on; "
          f"first rates {np.round(rates[:3], 6).tolist()}, last {rates[-2]:.3g}")


def warmup(n, epochs):
    """Trials whose warm-up is at least as long as the trial, sampling the default space."""
    import keras_tuner

    from keras_trainkit.tuning import make_hypermodel

    hm = make_hypermodel((64,), 10, epochs=epochs)
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_accuracy", max_trials=n, seed=1)
    keras_tuner.Tuner(oracle=oracle, hypermodel=hm, directory=tempfile.mkdtemp(), project_name="w")
    longer = 0
    for i in range(n):
        values = oracle.populate_space(str(i))["values"]
        oracle._tried_so_far.add(oracle._compute_values_hash(values))
        total = epochs * math.ceil(1347 / values["batch_size"])
        steps = values.get("warmup_steps", round(values.get("warmup_fraction", 0.0) * total))
        longer += steps >= total
    print(f"{longer} of {n} trials: warm-up >= the trial's {epochs}-epoch length")


def save_cost(directory):
    """ms per trial of a 60-trial function search, plain Keras Tuner vs TrainkitTunerMixin, alternating."""
    import keras_tuner
    from _tuning_toys import FunctionTuner, hartmann6_objective, hartmann6_space

    from keras_trainkit.tuning import TrainkitTunerMixin

    class Safe(TrainkitTunerMixin, FunctionTuner):
        pass

    times = {"plain": [], "atomic": []}
    for _ in range(4):
        for kind, cls in (("plain", FunctionTuner), ("atomic", Safe)):
            oracle = keras_tuner.oracles.RandomSearchOracle(
                objective=keras_tuner.Objective("score", "min"), max_trials=60, seed=0,
                hyperparameters=hartmann6_space())
            start = time.perf_counter()
            tuner = cls(hartmann6_objective, oracle=oracle, directory=tempfile.mkdtemp(dir=directory),
                        project_name="h", overwrite=True)
            tuner.oracle.verbose = 0
            tuner.search(verbose=0)
            times[kind].append((time.perf_counter() - start) / 60 * 1000)
    ratio = statistics.median(a / p for a, p in zip(times["atomic"], times["plain"]))
    print({k: f"{statistics.median(v):.1f} ms/trial" for k, v in times.items()}, f"median paired ratio {ratio:.2f}")


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "batched":
        batched()
    elif command == "warmup":
        warmup(int(sys.argv[2]), int(sys.argv[3]))
    elif command == "save-cost":
        save_cost(sys.argv[2])
    else:
        raise SystemExit(__doc__)
