"""The quickstart example, the plotting helper and the benchmark smoke run."""

import importlib.util
import os
import sys

import numpy as np
import pytest

from keras_trainkit import schedules as S
from keras_trainkit.plotting import plot_schedule, schedule_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script(relpath):
    path = os.path.join(ROOT, relpath)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.pop(0)
    return module


def test_quickstart_trains_and_saves_plot(tmp_path):
    accuracy, rates = load_script("examples/quickstart.py").main(["--out", str(tmp_path), "--epochs", "6"])
    assert accuracy > 0.9
    assert len(rates) == 6
    assert rates[1] == pytest.approx(0.1, rel=0.05)  # peak reached right after the 2-epoch warm-up
    # The last update is number total - 1 of the closed-form schedule.
    steps_per_epoch = 43  # ceil(1347 / 32)
    total, warmup = 6 * steps_per_epoch, 2 * steps_per_epoch
    t = total - 1 - warmup
    expected = 0.1 * (0.99 * 0.5 * (1 + np.cos(np.pi * t / (total - warmup))) + 0.01)
    assert rates[-1] == pytest.approx(expected, rel=1e-5)
    png = tmp_path / "quickstart_schedule.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_schedule_values_and_validation(tmp_path):
    import keras

    sched = keras.optimizers.schedules.CosineDecay(0.1, 50, warmup_target=0.2, warmup_steps=10)
    values = schedule_values(sched, np.arange(60))
    assert values[10] == pytest.approx(0.2, rel=1e-6)
    np.testing.assert_allclose(schedule_values(S.Constant(0.3), [0, 5]), [0.3, 0.3])
    fig = plot_schedule(S.WarmUp(0.1, 10), 30, path=str(tmp_path / "p.png"))
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata()[:11], np.linspace(0, 0.1, 11), rtol=1e-6)
    with pytest.raises(ValueError, match="`total_steps`"):
        plot_schedule(S.Constant(0.1), 0)


@pytest.mark.parametrize("model", ["mlp", pytest.param("cnn", marks=pytest.mark.long)])
def test_callback_overhead_benchmark_smoke(tmp_path, model):
    out = tmp_path / "bench.json"
    module = load_script("benchmarks/callback_overhead.py")
    results = module.main(["--smoke", "--model", model, "--out", str(out)])
    assert set(results) == set(module.CONFIGS.values())
    assert results["bare fit"]["median_ratio"] == 1.0
    assert out.exists()


def test_callback_host_time_benchmark_smoke(tmp_path):
    out = tmp_path / "host.json"
    module = load_script("benchmarks/callback_host_time.py")
    results = module.main(["--smoke", "--configs", "stack", "--out", str(out)])
    hooks = results[module.CONFIGS["stack"]]["hooks"]
    assert {"WarmUp.on_epoch_end", "TensorBoard.on_epoch_end", "GradientNormLogger.on_epoch_begin"} <= set(hooks)
    assert all(v["median_ms"] > 0 for v in hooks.values())
    assert out.exists()


def test_jax_step_time_benchmark_smoke(tmp_path):
    """The JAX compiled-step benchmark, in a JAX process: it times the step the
    fit runs (donated state, as Keras jits it), with the callbacks' wrappers
    (GradientNormLogger's metric state), next to the floor (the bare step that
    only returns the global gradient norm), and reads what each compiled step
    writes to memory.

    GradientNormLogger's squares of the gradients stay inside XLA's fusions:
    its step writes no large array that the bare step does not (without the
    optimization barrier, XLA shares `g * g` with Adam's second moment and
    writes both large kernels' squared gradients, 320 KB, every step), and
    it writes less than 1 KB more than the floor does."""
    pytest.importorskip("jax")
    import json
    import subprocess

    out = tmp_path / "step.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "jax_step_time.py"), "--configs",
                           "floor,gradnorm100", "--blocks", "2", "--calls", "2", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert list(results)[:2] == ["bare fit", "floor: the global gradient norm alone, returned in the step's logs "
                                             "(no callback)"]
    assert results["bare fit"]["median_ratio"] == 1.0
    logger = results["GradientNormLogger(update_freq=100) + log_dir"]
    floor = results[list(results)[1]]
    assert logger["median_seconds"] > 0 and floor["median_seconds"] > 0
    assert "| GradientNormLogger(update_freq=100) + log_dir |" in proc.stdout
    bare = results["bare fit"]["compiled"]
    assert bare["large_outputs"] >= 8  # the two kernels' gradients, Adam's moments and new weights
    assert logger["compiled"]["large_outputs"] == floor["compiled"]["large_outputs"] == bare["large_outputs"]
    # What the floor writes: the norms and the small tensors' squares; the
    # logger adds its accumulators and its record.
    assert 0 < floor["compiled"]["bytes_written"] - bare["bytes_written"] < 64 * 256 * 4
    assert 0 <= logger["compiled"]["bytes_written"] - floor["compiled"]["bytes_written"] < 1024


def test_torch_step_time_benchmark_smoke(tmp_path):
    """The torch step benchmark, in a torch process: it times the steps of
    real fits (every `train_step` call), with and without the callbacks."""
    pytest.importorskip("torch")
    import json
    import subprocess

    out = tmp_path / "step.json"
    env = {**os.environ, "KERAS_BACKEND": "torch"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "torch_step_time.py"), "--configs",
                           "gradnorm100", "--repeats", "1", "--epochs", "2", "--tile", "1", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["backend"] == "torch" and data["repeats"] == 1
    results = data["results"]
    assert list(results) == ["bare fit", "GradientNormLogger(update_freq=100) + log_dir"]
    assert results["bare fit"]["median_ratio"] == 1.0
    # A step of this MLP takes between 0.1 ms and 0.1 s on any machine.
    assert all(1e-4 < r["median_seconds"] < 0.1 for r in results.values())
    assert "| GradientNormLogger(update_freq=100) + log_dir |" in proc.stdout


def test_tune_digits_example(tmp_path, capsys):
    best = load_script("examples/tune_digits.py").main(["--trials", "3", "--epochs", "1", "--dir", str(tmp_path)])
    assert best.status == "COMPLETED" and 0.0 < best.score <= 1.0
    assert "batch_size" in best.hyperparameters.values
    out = capsys.readouterr().out
    # The search shows its progress by default, and saves its picture.
    for i in (1, 2, 3):
        assert f"Search: Running Trial #{i} of 3" in out and f"Trial {i} of 3 Complete" in out
    assert "step - accuracy: " in out and "Estimated time left" in out  # Keras' bar of the epoch
    assert (tmp_path / "digits_search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("suite", ["synthetic", "digits"])
def test_search_efficiency_benchmark_smoke(tmp_path, suite):
    out = tmp_path / "search.json"
    args = ["--smoke", "--suite", suite, "--out", str(out)]
    if suite == "digits":
        args += ["--tuners", "random,optuna-tpe-pruned", "--seeds", "1", "--trials", "2"]
    results = load_script("benchmarks/search_efficiency.py").main(args)
    assert out.exists()
    if suite == "synthetic":
        assert set(results) == {f"{p}/{t}" for p in ("hartmann6", "branin")
                                for t in ("genetic", "random", "bayesian", "hyperband", "optuna-tpe",
                                          "optuna-cmaes")}
        assert all(r["regret_mean"] >= 0 for r in results.values())
    else:
        assert set(results) == {"random", "optuna-tpe-pruned"}
        assert all(0 <= r["best_mean"] <= 1 for r in results.values())
        # Epochs: 2 trials of 1 epoch (smoke); random reaches its own final best within them.
        assert results["random"]["epochs"] == [2]
        assert results["random"]["fraction_of_random_epochs"][0] in (0.5, 1.0)
