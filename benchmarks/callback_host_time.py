"""Host (Python) time each callback spends in its epoch hooks during fit().

Complements `callback_overhead.py`, which measures whole epochs: this one
wraps every callback of a configuration (same configurations, model and data
as there) and times each hook call with `time.perf_counter`, so the per-epoch
host work of each callback is seen directly, not as a small difference of two
noisy epoch times. The first epoch (tracing, first writes) is reported
separately; the table shows the median of the others over all repeats, in
milliseconds, next to the bare fit's median epoch time.

    python benchmarks/callback_host_time.py                   # stack and kerasstack
    python benchmarks/callback_host_time.py --configs lr,tb --repeats 5
    python benchmarks/callback_host_time.py --smoke           # seconds, for the tests
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import EpochTimer, machine, write_json  # noqa: E402
from callback_overhead import (  # noqa: E402
    CONFIGS,
    build_model,
    config_names,
    load_data,
    make_callbacks,
)

HOOKS = ("on_train_begin", "on_epoch_begin", "on_epoch_end", "on_train_end")


def timed(callback, sink):
    """Wraps `callback`'s hooks (instance attributes) to append their durations to `sink`."""
    name = type(callback).__name__
    for hook in HOOKS:
        original = getattr(callback, hook)

        def wrapper(*args, _original=original, _key=(name, hook), **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                sink.setdefault(_key, []).append(time.perf_counter() - start)

        setattr(callback, hook, wrapper)
    return callback


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--configs", default="stack,kerasstack", help="comma-separated subset of " + ",".join(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=7)
    parser.add_argument("--tile", type=int, default=4, help="repeat the training set this many times")
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 2 epochs, tiny data")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/callback_host_time_<model>.json)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.epochs = 1, 2
    names = config_names(args.configs)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"callback_host_time_{args.model}.json")

    import keras

    x, y = load_data(args.model, args.smoke, args.tile)

    epoch_times, samples = [], {n: {} for n in names}
    for _ in range(args.repeats):
        for name in ["bare", *names]:
            keras.utils.set_random_seed(0)
            model = build_model(args.model)
            timer = EpochTimer()
            sink = samples[name] if name != "bare" else {}
            with tempfile.TemporaryDirectory() as log_dir:
                callbacks = [timed(cb, sink) for cb in make_callbacks(name, log_dir)]
                model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, callbacks=[*callbacks, timer])
            if name == "bare":
                epoch_times += timer.times[1:]

    results, lines = {}, []
    epoch_ms = statistics.median(epoch_times) * 1e3
    for name in names:
        per_epoch = {}
        for (callback, hook), durations in samples[name].items():
            if hook in ("on_epoch_begin", "on_epoch_end"):
                # Every run's first epoch is the first of each group of `epochs`.
                first = durations[::args.epochs]
                rest = [d for i, d in enumerate(durations) if i % args.epochs] or [0.0]
                per_epoch[f"{callback}.{hook}"] = {"first_ms": statistics.median(first) * 1e3,
                                                   "median_ms": statistics.median(rest) * 1e3}
        total = sum(v["median_ms"] for v in per_epoch.values())
        results[CONFIGS[name]] = {"hooks": per_epoch, "total_ms_per_epoch": total,
                                  "fraction_of_bare_epoch": total / epoch_ms}
        lines.append(f"\n{CONFIGS[name]}\n\n| callback hook | first epoch (ms) | later epochs, median (ms) |\n|---|---|---|")
        lines += [f"| {k} | {v['first_ms']:.2f} | {v['median_ms']:.2f} |" for k, v in per_epoch.items()]
        lines.append(f"| **total per epoch** | | **{total:.2f}** ({100 * total / epoch_ms:.1f}% of a bare "
                     f"{epoch_ms:.0f} ms epoch) |")
    table = "\n".join(lines)
    print(table)
    write_json(out, {"benchmark": "callback_host_time", "model": args.model, "machine": machine(),
                     "repeats": args.repeats, "epochs": args.epochs, "bare_epoch_ms": epoch_ms,
                     "command": "python benchmarks/callback_host_time.py " + " ".join(argv or sys.argv[1:]),
                     "results": results, "table": table})
    return results


if __name__ == "__main__":
    main()
