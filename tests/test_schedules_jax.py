"""Schedules are keras.ops only: they also run on the JAX backend (skipped without JAX).

The in-graph callbacks need the tensorflow (or torch) backend and say so.
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

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed")

SCRIPT = textwrap.dedent("""
    import json
    import jax, keras, numpy as np
    from keras_trainkit import callbacks as C, schedules as S
    assert keras.backend.backend() == "jax"
    sched = S.WarmUp(S.CosineDecayRestarts(0.1, 20, t_mul=1.5, m_mul=0.8, alpha=0.1), 10, 0.01, "cosine")
    steps = np.arange(0, 200)
    jitted = jax.jit(lambda t: sched(t))
    out = {"host": sched(steps).tolist(), "jit": [float(jitted(jax.numpy.asarray(s, "float32"))) for s in steps[::7]]}
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(sched), "mse")
    x = np.ones((32, 3), "float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0)
    out["optimizer_rate"] = float(model.optimizer.learning_rate)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    try:
        model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0, callbacks=[C.WarmUp(3)])
        out["callback"] = "ran"
    except RuntimeError as e:
        out["callback"] = str(e)
    print(json.dumps(out))
""")


def test_schedules_on_jax_and_clear_refusal_of_in_graph_callbacks(tmp_path):
    script = tmp_path / "jax_check.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    sched = S.WarmUp(S.CosineDecayRestarts(0.1, 20, t_mul=1.5, m_mul=0.8, alpha=0.1), 10, 0.01, "cosine")
    steps = np.arange(0, 200)
    np.testing.assert_allclose(out["host"], sched(steps), rtol=1e-6)
    np.testing.assert_allclose(out["jit"], sched(steps[::7]), rtol=1e-6)
    assert out["optimizer_rate"] == pytest.approx(float(sched(4)), rel=1e-6)
    assert "tensorflow and torch backends" in out["callback"] and "'jax'" in out["callback"]
