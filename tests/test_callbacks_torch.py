"""The learning-rate callbacks and EarlyStopping on the torch backend (skipped without torch).

GradientNormLogger's in-graph measurement is TensorFlow code: on torch it
refuses with a clear error.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from keras_trainkit import schedules as S

pytestmark = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")

SCRIPT = textwrap.dedent("""
    import json, sys
    import keras, numpy as np
    from keras_trainkit import callbacks as C
    assert keras.backend.backend() == "torch"
    log_dir = sys.argv[1]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")

    def model():
        keras.utils.set_random_seed(0)
        m = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)])
        m.compile(keras.optimizers.SGD(0.05), "mse")
        return m

    class Recorder(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_begin(self, batch, logs=None):
            opt = self.model.optimizer
            self.seen.append((int(opt.iterations), float(opt.learning_rate)))

    rec = Recorder()
    m = model()
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", mode="max", factor=0.5, patience=0, min_lr=0.0)
    history = m.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False,
                    callbacks=[plateau, C.WarmUp(4, log_dir=log_dir), C.CosineDecay(20), rec,
                               C.EarlyStopping(monitor="loss", patience=5, restore_best_weights=True)])
    out = {"seen": rec.seen, "history": history.history,
           "own_rate": float(keras.ops.convert_to_numpy(m.optimizer._learning_rate))}
    try:
        model().fit(x, y, epochs=1, verbose=0, callbacks=[C.GradientNormLogger()])
        out["grad_norm"] = "ran"
    except RuntimeError as e:
        out["grad_norm"] = str(e)
    print(json.dumps(out))
""")


def test_lr_callbacks_and_early_stopping_on_torch(tmp_path):
    script = tmp_path / "torch_check.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "logs")], capture_output=True, text=True,
                          env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])

    schedule = S.WarmUp(S.CosineDecay(0.05, 20), 4)
    # ReduceLROnPlateau (mode="max" on a falling loss) halves the scale at the
    # ends of epochs 2 and 3 (6 updates an epoch): from updates 12 and 18.
    steps = np.array([s for s, _ in out["seen"]])
    assert list(steps) == list(range(24))
    scale = 0.5 ** np.maximum(steps // 6 - 1, 0)
    np.testing.assert_allclose([r for _, r in out["seen"]], schedule(steps) * scale, rtol=1e-6)
    last = np.array([5, 11, 17, 23])
    np.testing.assert_allclose(out["history"]["learning_rate"],
                               schedule(last) * 0.5 ** np.maximum(last // 6 - 1, 0), rtol=1e-6)
    assert out["history"]["best_epoch"][-1] == int(np.argmin(out["history"]["loss"]))
    # The reductions live in the optimizer's own rate variable (checkpoints carry
    # it); the one at the end of epoch 4 does not happen: the rate is 0 there.
    assert out["own_rate"] == pytest.approx(0.05 * 0.5 ** 2)

    from tensorboard.backend.event_processing import event_accumulator

    acc = event_accumulator.EventAccumulator(str(tmp_path / "logs" / "train"),
                                             size_guidance={event_accumulator.TENSORS: 0})
    acc.Reload()
    events = acc.Tensors("learning_rate")
    tb_steps = np.array([e.step for e in events])
    values = [e.tensor_proto.float_val[0] for e in events]
    assert list(tb_steps) == list(range(1, 25))
    np.testing.assert_allclose(values, schedule(tb_steps - 1) * 0.5 ** np.maximum((tb_steps - 1) // 6 - 1, 0),
                               rtol=1e-6)
    assert out["grad_norm"].startswith("GradientNormLogger measures inside TensorFlow's graph")
