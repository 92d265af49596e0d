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
                self.times = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.times.append(time.perf_counter() - self._t0)

        return _Timer()


def paired_ratios(configs: dict[str, Callable[[], float]], baseline: str, repeats: int) -> dict:
    """Runs every config once per repeat, in alternating order; ratios to baseline.

    Each callable returns one timing. Ratios are taken within a repeat (paired)
    and summarised by their median, which is robust to a noisy neighbour.
    """
    names = list(configs)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            times[name].append(configs[name]())
    ratios = {n: [t / b for t, b in zip(times[n], times[baseline])] for n in names}
    return {
        n: {
            "median_seconds": statistics.median(times[n]),
            "median_ratio": statistics.median(ratios[n]),
            "ratios": ratios[n],
        }
        for n in names
    }


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_json(path: str, payload: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)


def markdown_table(results: dict, baseline: str) -> str:
    lines = ["| configuration | median ratio to " + baseline + " | min | max |", "|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['median_ratio']:.3f}x | {min(r['ratios']):.3f}x | {max(r['ratios']):.3f}x |")
    return "\n".join(lines)
