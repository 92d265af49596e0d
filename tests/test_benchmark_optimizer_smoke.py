"""The optimizer speed benchmarks run end to end in their smoke modes: the
TensorFlow one in-process, the JAX one against optax in a JAX subprocess."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = pathlib.Path(__file__).parents[1]
BENCHMARK = ROOT / "benchmarks" / "optimizer_speed.py"
JAX_BENCHMARK = ROOT / "benchmarks" / "optimizer_speed_jax.py"


def _load():
    spec = importlib.util.spec_from_file_location("optimizer_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_prints_a_table_and_writes_json(tmp_path, capsys):
    benchmark = _load()
    out = tmp_path / "speed.json"
    start = time.process_time()  # CPU time: what other jobs on the machine do not inflate
    payload = benchmark.main(["--smoke", "--out", str(out)])
    assert time.process_time() - start < 20

    table = capsys.readouterr().out
    assert table.startswith("| optimizer | baseline |")
    written = json.loads(out.read_text())
    assert written["command"] == f"python benchmarks/optimizer_speed.py --smoke --out {out}"
    assert written["protocol"]["repeats"] == 1
    rows = {r["optimizer"]: r for r in written["results"]}
    assert set(rows) == set(benchmark.configurations())
    for name in ("SGD(momentum=0.9)", "Adagrad", "RMSprop", "Adam"):
        assert rows[name]["baseline"] == f"keras {name}" and rows[name]["limit"] == 1.05
    assert rows["Adan"]["baseline"] == "keras Adam" and rows["Adan"]["limit"] == 1.5
    for row in rows.values():
        assert row["step_ms"] > 0 and row["ratio_median"] > 0
        assert f"| {row['optimizer']} |" in table
    assert payload["results"] == written["results"]


def test_only_selects_configurations(tmp_path):
    benchmark = _load()
    args = benchmark.parse_args(["--smoke", "--only", "Adam,Yogi", "--out", str(tmp_path / "x.json")])
    assert args.repeats == 1 and args.only == "Adam,Yogi"


# The JAX benchmark must run under KERAS_BACKEND=jax, so in a subprocess: its
# smoke mode, then its equivalence check on a pair that is not equivalent.
JAX_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, sys
    spec = importlib.util.spec_from_file_location("optimizer_speed_jax", sys.argv[1])
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--smoke", "--out", sys.argv[2]])
    import optax
    from keras_trainkit import optimizers as kto
    init, grads = bench.make_data(bench.SHAPE_SETS["tiny"])
    wrong = bench.max_relative_difference(
        bench.Ours(kto.Yogi(1e-2, beta_1=0.8), init), bench.Optax(optax.yogi(1e-2), init), grads
    )
    print(json.dumps({"wrong_pair_difference": wrong}))
    """
)


def test_jax_smoke_mode_compares_with_optax(tmp_path):
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    out = tmp_path / "jax.json"
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    # Smoke timings mean nothing: halve XLA's compile time (14 small programs).
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
    proc = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(JAX_BENCHMARK), str(out)],
        capture_output=True, text=True, env=env, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| optimizer | optax |")
    written = json.loads(out.read_text())
    assert written["command"] == f"python benchmarks/optimizer_speed_jax.py --smoke --out {out}"
    assert written["machine"]["backend"] == "jax" and written["protocol"]["donated"]
    rows = {r["optimizer"]: r for r in written["results"]}
    ours = ["RAdam", "AdaBelief", "Yogi", "Adan", "LARS", "NovoGrad"]
    assert set(rows) == {*ours, "keras Adam"}
    for name in ours:
        row = rows[name]
        assert row["optax"] == f"optax.{name.lower()}" and row["limit"] == 1.1
        # The pair computes the same rule (checked before timing).
        assert row["max_relative_difference"] <= 1e-5, (name, row["max_relative_difference"])
        assert row["ours_ms"] > 0 and row["optax_ms"] > 0 and row["ratio_median"] > 0
        assert f"| {name} | optax.{name.lower()} |" in proc.stdout
    assert rows["keras Adam"]["limit"] is None and rows["keras Adam"]["max_relative_difference"] is None
    # ... and the check does catch a pair with other hyperparameters.
    assert json.loads(lines[-1])["wrong_pair_difference"] > 1e-4

