"""The same MLP's training step time on TensorFlow, JAX and torch, side by side.

The digits MLP of `callback_overhead.py` (64-256-256-10, Adam, batch 32, the
training set tiled 4 times: 169 steps an epoch), a bare `fit()` and the
keras_trainkit stack (WarmUp, CosineDecay, EarlyStopping, GradientNormLogger
every 100 updates, TensorBoard), each in a fresh process per backend. Each
repeat runs every backend once, in alternating order (and bare/stack
alternating within it); a run's time is its
fastest epoch after the first (compilation). The table gives, per backend, the
median over the repeats of the epoch time relative to TensorFlow's bare fit
in the same repeat (paired), and the stack's ratio to that backend's bare fit.

    python benchmarks/backend_step_time.py [--repeats 5] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, write_json  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")

CHILD = """
import json, os, sys, tempfile
sys.path.insert(0, {here!r})
import keras
from callback_overhead import build_model, load_data, make_callbacks
from _common import EpochTimer
x, y = load_data("mlp", {smoke!r}, 4)
out = {{}}
for name in {order!r}:
    keras.utils.set_random_seed(0)
    model = build_model("mlp")
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as log_dir:
        model.fit(x, y, batch_size=32, epochs={epochs}, verbose=0, callbacks=[*make_callbacks(name, log_dir), timer])
    out[name] = min(timer.times[1:])
print("RESULT " + json.dumps(out))
"""


def run_backend(backend: str, smoke: bool, epochs: int, order=("bare", "stack")) -> dict[str, float]:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", CHILD.format(here=HERE, smoke=smoke, epochs=epochs, order=tuple(order))],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} failed:\n{proc.stderr[-3000:]}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="1 repeat, 2 epochs, tiny data")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "backend_step_time.json"))
    args = parser.parse_args(argv)
    if args.smoke:
        args.repeats, args.epochs = 1, 2
    runs = []
    for r in range(args.repeats):
        order = BACKENDS if r % 2 == 0 else BACKENDS[::-1]
        configs = ("bare", "stack") if r % 2 == 0 else ("stack", "bare")
        runs.append({b: run_backend(b, args.smoke, args.epochs, configs) for b in order})
    rows = []
    for b in BACKENDS:
        vs_tf = [run[b]["bare"] / run["tensorflow"]["bare"] for run in runs]
        stack = [run[b]["stack"] / run[b]["bare"] for run in runs]
        rows.append({"backend": b, "bare_vs_tensorflow": statistics.median(vs_tf),
                     "stack_vs_bare": statistics.median(stack), "stack_vs_bare_min": min(stack),
                     "stack_vs_bare_max": max(stack)})
    table = "\n".join(["| backend | bare epoch vs TensorFlow's | keras_trainkit stack vs bare (median, min-max) |",
                       "|---|---|---|"] + [
        f"| {r['backend']} | {r['bare_vs_tensorflow']:.3f}x | {r['stack_vs_bare']:.3f}x "
        f"({r['stack_vs_bare_min']:.3f}-{r['stack_vs_bare_max']:.3f}) |" for r in rows])
    print(table)
    write_json(args.out, {"benchmark": "backend_step_time", "machine": machine(), "repeats": args.repeats,
                          "epochs": args.epochs, "runs": runs, "rows": rows, "table": table,
                          "command": "python benchmarks/backend_step_time.py " + " ".join(argv or sys.argv[1:])})
    return rows


if __name__ == "__main__":
    main()
