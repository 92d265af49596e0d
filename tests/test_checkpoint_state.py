"""State that changes the training trajectory lives where Keras checkpoints it.

ReduceLROnPlateau's rescaling of a scheduled rate is kept in the optimizer's
own learning-rate variable, and BatchSizeScheduler's rate factor is a function
of the epoch: a run SIGKILLed and resumed by BackupAndRestore, and a model
saved and loaded with `keras.saving.load_model`, continue with the rates of the
uninterrupted run.
"""

import json
import os
import subprocess
import sys

import _resume_worker as worker
import keras
import numpy as np
import pytest

from keras_trainkit import schedules as S

HERE = os.path.dirname(os.path.abspath(__file__))


class Rates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = {}

    def on_train_batch_begin(self, batch, logs=None):
        opt = self.model.optimizer
        self.seen[int(opt.iterations)] = float(opt.learning_rate)


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run's rate at every update, and its epoch boundaries."""
    keras.backend.clear_session(free_memory=False)
    model, data, callbacks = worker.make_run(keras)
    rates, starts = Rates(), []
    epoch_starts = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda e, logs: starts.append(int(model.optimizer.iterations)))
    model.fit(data, epochs=worker.EPOCHS, verbose=0, callbacks=callbacks + [epoch_starts, rates])
    return rates.seen, starts


def run(tmp_path, save_freq, kill_at, backend="tensorflow"):
    spec = {"dir": str(tmp_path / "backup"), "rates": str(tmp_path / "rates.jsonl"), "save_freq": save_freq,
            "kill_at": kill_at}
    return subprocess.run([sys.executable, os.path.join(HERE, "_resume_worker.py"), json.dumps(spec)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": HERE, "KERAS_BACKEND": backend})


def records(tmp_path):
    """`(update, rate, epoch)` of every update run so far, in order."""
    with open(tmp_path / "rates.jsonl") as f:
        return [tuple(json.loads(line)) for line in f if line.strip()]


@pytest.mark.parametrize("backend,save_freq,kill_at", [
    ("tensorflow", "epoch", 33), ("tensorflow", 4, 34), ("jax", "epoch", 33), ("torch", "epoch", 33)],
    ids=["per-epoch", "mid-epoch", "jax-per-epoch", "torch-per-epoch"])
def test_killed_and_resumed_run_keeps_the_rescaled_rate(tmp_path, reference, backend, save_freq, kill_at):
    """On every backend (the uninterrupted reference runs on TensorFlow: the
    rates agree across backends, see test_backends.py)."""
    ref, starts = reference
    # Epochs run 12, 12, 6, 6, 3 updates (batch 8, 8, 16, 16, 32 of 96 samples);
    # ReduceLROnPlateau halves the scale at the ends of epochs 1, 2 and 3, and the
    # batch-size factor is 1, 1, 2, 2, 4. The kill is in epoch 3.
    assert starts == [0, 12, 24, 30, 36]
    killed = run(tmp_path, save_freq, kill_at, backend)
    assert killed.returncode == -9, killed.stderr[-3000:]
    first = records(tmp_path)
    assert first[-1][0] == kill_at - 1
    resumed = run(tmp_path, save_freq, None, backend)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = records(tmp_path)[len(first):]
    # BackupAndRestore restarts the epoch of its last checkpoint from its first
    # batch, with the optimizer (its update count, its rate variable) as saved:
    # per epoch, epoch 3 from update 30; every 4 batches, epoch 3 from update 32.
    epoch = after[0][2]
    assert (epoch, after[0][0]) == ((3, 30) if save_freq == "epoch" else (3, 32))
    # Until the next ReduceLROnPlateau decision (its wait counter and best value
    # are lost on resume, as in plain Keras), the resumed epoch runs at the
    # uninterrupted run's epoch-3 rates: rate(u) = schedule(u) * 0.25 (two
    # reductions, kept in the optimizer's rate variable) * 2 (the batch-size
    # factor of epoch 3, applied once). Before this design the resumed rate was
    # 4x too high (reductions lost) or the factor was applied twice.
    schedule = S.CosineDecay(0.05, 60, alpha=0.1)
    window = [(u, r) for u, r, e in after if e == epoch]
    assert len(window) == 6
    np.testing.assert_allclose([ref[u] for u in range(30, 36)], schedule(np.arange(30, 36)) * 0.5, rtol=1e-6)
    np.testing.assert_allclose([r for _, r in window], schedule(np.array([u for u, _ in window])) * 0.5,
                               rtol=1e-6)


def test_model_save_and_load_model_continue_with_the_same_rates(tmp_path, reference):
    ref, starts = reference
    model, data, callbacks = worker.make_run(keras)
    model.fit(data, epochs=3, verbose=0, callbacks=callbacks)  # two reductions (ends of epochs 2, 3)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects
    assert float(loaded.optimizer.learning_rate) == pytest.approx(0.05 * 0.25)
    # Continue both the in-memory model and the loaded one for an epoch with the
    # same callbacks: the same rates as the uninterrupted run's epoch 4.
    for m in (model, loaded):
        _, data2, callbacks2 = worker.make_run(keras)
        rates = Rates()
        m.fit(data2, epochs=4, initial_epoch=3, verbose=0, callbacks=callbacks2[:2] + [rates])
        assert sorted(rates.seen) == list(range(starts[3], starts[4]))
        np.testing.assert_allclose([rates.seen[u] for u in sorted(rates.seen)],
                                   [ref[u] for u in sorted(rates.seen)], rtol=1e-6)


def test_model_checkpoint_mid_fit_loads_with_the_rescaled_rate(tmp_path):
    path = str(tmp_path / "ckpt.keras")
    model, data, callbacks = worker.make_run(keras)
    model.fit(data, epochs=3, verbose=0, callbacks=callbacks + [keras.callbacks.ModelCheckpoint(path)])
    loaded = keras.saving.load_model(path)
    assert [v.shape for v in loaded.optimizer.variables] == [v.shape for v in model.optimizer.variables]
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b))
    assert isinstance(loaded.optimizer._learning_rate, keras.Variable)
