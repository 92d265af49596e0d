"""The recipe gallery (examples/recipes): each script runs in its reduced `--smoke`
mode, prints its table and writes its figure; the numbers it reports are checked
against what the script claims to do."""

import importlib.util
import math
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(ROOT, "examples", "recipes")
PNG = b"\x89PNG\r\n\x1a\n"


def run(name, tmp_path, capsys):
    path = os.path.join(RECIPES, f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--smoke", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "|---|" in printed  # the table
    return module, out, printed


def assert_png(path):
    assert path.read_bytes()[:8] == PNG
    assert path.stat().st_size < 300_000  # small enough for docs/


def test_lr_range_test(tmp_path, capsys):
    _, out, printed = run("lr_range_test", tmp_path, capsys)
    rates = [row["learning rate"] for row in out["rows"]]
    s = out["suggestions"]
    assert rates == pytest.approx([s["valley"] / 100, s["valley"], 10 * s["minimum/10"]])
    assert rates[0] < rates[1] < rates[2]
    assert "suggestions: valley" in printed
    assert_png(tmp_path / "recipe_lr_range_test.png")


def test_optimizers_compared(tmp_path, capsys):
    module, out, _ = run("optimizers_compared", tmp_path, capsys)
    rows = {row["optimizer"]: row for row in out["rows"]}
    assert list(rows) == module.SMOKE and set(module.SMOKE) <= set(module.OPTIMIZERS)
    assert set(module.RATES_2D) == set(module.OPTIMIZERS)
    assert rows["GD (full batch)"]["digits updates"] == 1  # one batch of all samples, one epoch
    assert rows["momentum 0.9"]["digits updates"] == 8  # ceil(256 / 32)
    assert all(np.isfinite(row["2-D settled f"]) for row in rows.values())
    # Full-batch GD descends deterministically: its path is the exact-gradient one.
    path = module.descend("GD (full batch)", 1e-3, 3, 0)
    w = np.array(module.START)
    for step in range(3):
        x, y = w
        grad = np.array([-2 * (1 - x) - 400 * x * (y - x * x), 200 * (y - x * x)])
        w = w - 1e-3 * grad
        np.testing.assert_allclose(path[step + 1], w, rtol=1e-5)
    assert_png(tmp_path / "recipe_optimizers.png")


def test_batch_size_scaling(tmp_path, capsys):
    module, out, _ = run("batch_size_scaling", tmp_path, capsys)
    for row in out["rows"]:
        if row["rule"].startswith("linear scaling"):
            assert row["learning rate"] == pytest.approx(module.BASE_RATE * row["batch"] / module.BASE_BATCH)
        else:
            assert row["learning rate"] == module.BASE_RATE
        assert (row["warm-up updates"] > 0) == row["rule"].endswith("warm-up")
        assert row["updates"] == 2 * math.ceil(256 / row["batch"])
    assert len(out["rows"]) == 4  # the baseline and the three rules at batch 128
    assert_png(tmp_path / "recipe_batch_size.png")


def test_regularization(tmp_path, capsys):
    _, out, _ = run("regularization", tmp_path, capsys)
    assert [row["penalty"] for row in out["rows"]] == ["none", "L2 (0.001)", "L1 (0.001)"]
    sparsity = [float(row["weights below 1e-3"].rstrip("%")) for row in out["rows"]]
    assert sparsity[2] > sparsity[0]  # L1 zeroes weights even in two epochs
    assert_png(tmp_path / "recipe_regularization.png")


def test_schedules_compared(tmp_path, capsys):
    module, out, _ = run("schedules_compared", tmp_path, capsys)
    total = math.ceil(256 / 32)  # one epoch
    last = {row["schedule"]: row["last rate"] for row in out["rows"]}
    t = total - 1
    assert last["constant"] == pytest.approx(0.1)
    assert last["step"] == pytest.approx(0.001)  # both milestones passed
    assert last["exponential"] == pytest.approx(0.1 * 0.01 ** (t / total), rel=1e-5)
    assert last["inverse-time"] == pytest.approx(0.1 / (1 + 9 * t / total), rel=1e-5)
    assert last["cosine"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * t / total)), rel=1e-4)
    assert last["one-cycle"] == pytest.approx(0.1 / 25 / 1e4, rel=1e-5)
    assert_png(tmp_path / "recipe_schedules.png")
    assert_png(tmp_path / "one_cycle.png")


def test_search_compared(tmp_path, capsys):
    module, out, printed = run("search_compared", tmp_path, capsys)
    rows = {row["tuner"]: row for row in out["rows"]}
    assert {"grid", "random", "Bayesian (GP)", "genetic (ours)"} <= set(rows)
    assert all(row["trials"] == 1 and 0.0 <= row["best val accuracy"] <= 1.0 for row in rows.values())
    grid = rows["grid"]  # Keras Tuner's grid starts at the defaults (the minima) and walks the grid
    assert any(grid["learning_rate"] == pytest.approx(v) for v in (1e-3, 1e-2, 1e-1))
    assert any(grid["l2"] == pytest.approx(v) for v in (1e-6, 1e-3))
    tpe, why = module.optuna_tpe(0)
    assert ("Optuna TPE" in rows) == (tpe is not None)
    if tpe is None:
        assert f"Optuna TPE skipped: {why}." in printed
    assert_png(tmp_path / "recipe_search.png")


def test_every_recipe_is_tested():
    scripts = sorted(f[:-3] for f in os.listdir(RECIPES) if f.endswith(".py") and not f.startswith("_"))
    tested = sorted(name[len("test_"):] for name in globals() if name.startswith("test_") and name != "test_every_recipe_is_tested")
    assert scripts == tested


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
