"""The optimizer speed benchmark runs end to end in its smoke mode (in-process)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
import time

BENCHMARK = pathlib.Path(__file__).parents[1] / "benchmarks" / "optimizer_speed.py"


def _load():
    spec = importlib.util.spec_from_file_location("optimizer_speed", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_mode_prints_a_table_and_writes_json(tmp_path, capsys):
    benchmark = _load()
    out = tmp_path / "speed.json"
    start = time.perf_counter()
    payload = benchmark.main(["--smoke", "--out", str(out)])
    assert time.perf_counter() - start < 20

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
