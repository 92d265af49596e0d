"""Shared helpers for the side-by-side benchmarks (paired, alternating, median)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class EpochTimer:
    """A keras callback recording wall time per epoch (epoch-level hooks only)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []  # wall clock
                self.cpu_times = []  # this process's CPU time, all threads

            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()
                self._c0 = time.process_time()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t0)
                self.cpu_times.append(time.process_time() - self._c0)

        return _Timer()


def paired_ratios(configs: dict[str, Callable[[], float | dict[str, float]]], baseline: str, repeats: int) -> dict:
    """Runs every config once per repeat, in alternating order; ratios to baseline.

    Each callable returns one timing, or a dict of timings by clock (the first
    is the main one, e.g. `{"wall": ..., "cpu": ...}`). Ratios are taken within
    a repeat (paired) and summarised by their median, which is robust to a
    noisy neighbour.
    """
    names = list(configs)
    times: dict[str, list] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            value = configs[name]()
            times[name].append(value if isinstance(value, dict) else {"": value})
    clocks = list(times[baseline][0])
    results = {}
    for n in names:
        entry = {}
        for clock in clocks:
            prefix = "" if clock == clocks[0] else f"{clock}_"
            t = [run[clock] for run in times[n]]
            ratios = [a / b[clock] for a, b in zip(t, times[baseline])]
            entry.update({f"{prefix}median_seconds": statistics.median(t),
                          f"{prefix}median_ratio": statistics.median(ratios), f"{prefix}ratios": ratios})
        results[n] = entry
    return results


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def markdown_table(results: dict, baseline: str) -> str:
    cpu = all("cpu_median_ratio" in r for r in results.values())
    head = "| configuration | median ratio to " + baseline + " | min | max |"
    lines = [head + (" CPU-time median ratio |" if cpu else ""), "|---|---|---|---|" + ("---|" if cpu else "")]
    for name, r in results.items():
        line = f"| {name} | {r['median_ratio']:.3f}x | {min(r['ratios']):.3f}x | {max(r['ratios']):.3f}x |"
        lines.append(line + (f" {r['cpu_median_ratio']:.3f}x |" if cpu else ""))
    return "\n".join(lines)
