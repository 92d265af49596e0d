"""Step time of keras_trainkit's optimizers next to Keras', side by side.

Every configuration trains its own copy of the same MLP (512-1024-512-10,
1,055,242 parameters; batch 128 of synthetic data) with `train_on_batch`, so
a step is the whole compiled train step: forward, backward and update. Each
repeat builds fresh models for all configurations (in alternating order),
traces and warms them up, then times `--steps` steps of each, interleaved one
step at a time in alternating order. A repeat's time for a configuration is
the median of its step times; ratios are taken within a repeat (paired) and
summarised by their median, min and max over repeats.

* Drop-ins (SGD, Adagrad, RMSprop, Adam) are compared with the Keras class of
  the same name and the same arguments; the goal is a ratio <= 1.05.
* The others are compared with `keras.optimizers.Adam`; the goal is <= 1.5.

The `update-only` columns time `optimizer.apply` alone on the same variables
(a compiled function; TensorFlow backend only), to show what the optimizer
itself costs. Usage::

    python benchmarks/optimizer_speed.py                # full run, about 3 minutes on 2 cores
    python benchmarks/optimizer_speed.py --smoke        # tiny model, 1 repeat
    python benchmarks/optimizer_speed.py --only Adam,Adan --repeats 9

Prints a markdown table and writes JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DROP_IN_LIMIT = 1.05
OTHER_LIMIT = 1.5
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "optimizer_speed.json")


def configurations():
    """name -> (factory of ours, baseline name, factory of the baseline, limit)."""
    import keras

    from keras_trainkit import optimizers as kto

    K = keras.optimizers
    return {
        "SGD(momentum=0.9)": (lambda: kto.SGD(momentum=0.9), "keras SGD(momentum=0.9)",
                              lambda: K.SGD(momentum=0.9), DROP_IN_LIMIT),
        "Adagrad": (kto.Adagrad, "keras Adagrad", K.Adagrad, DROP_IN_LIMIT),
        "RMSprop": (kto.RMSprop, "keras RMSprop", K.RMSprop, DROP_IN_LIMIT),
        "Adam": (kto.Adam, "keras Adam", K.Adam, DROP_IN_LIMIT),
        "RAdam": (kto.RAdam, "keras Adam", K.Adam, OTHER_LIMIT),
        "AdaBelief": (kto.AdaBelief, "keras Adam", K.Adam, OTHER_LIMIT),
        "Yogi": (kto.Yogi, "keras Adam", K.Adam, OTHER_LIMIT),
        "Adan": (kto.Adan, "keras Adam", K.Adam, OTHER_LIMIT),
        "LARS": (kto.LARS, "keras Adam", K.Adam, OTHER_LIMIT),
        "NovoGrad": (kto.NovoGrad, "keras Adam", K.Adam, OTHER_LIMIT),
        "Lookahead(keras Adam)": (lambda: kto.Lookahead(K.Adam()), "keras Adam", K.Adam,
                                  OTHER_LIMIT),
    }


def build_model(sizes, seed, optimizer, jit_compile):
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.Input((sizes[0],))]
    layers += [keras.layers.Dense(n, activation="relu") for n in sizes[1:-1]]
    layers += [keras.layers.Dense(sizes[-1])]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


class Runner:
    """One model + optimizer; times blocks of train steps and of bare updates."""

    def __init__(self, factory, sizes, batch, jit_compile, seed=0):
        import keras
        import numpy as np

        rng = np.random.default_rng(seed)
        self.x = keras.ops.convert_to_tensor(rng.standard_normal((batch, sizes[0])).astype("float32"))
        self.y = keras.ops.convert_to_tensor(rng.integers(0, sizes[-1], size=(batch,)).astype("int32"))
        self.model = build_model(sizes, seed, factory(), jit_compile)
        self.apply = None
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            variables = self.model.trainable_variables
            grads = [keras.ops.convert_to_tensor(0.01 * rng.standard_normal(v.shape).astype("float32"))
                     for v in variables]
            optimizer = self.model.optimizer

            @tf.function(jit_compile=bool(self.model.jit_compile))
            def apply():
                optimizer.apply(grads, variables)

            self.apply = apply

    def warm_up(self, steps):
        for _ in range(steps):
            self.model.train_on_batch(self.x, self.y)
            if self.apply is not None:
                self.apply()
                self._sync()

    def _sync(self):
        # Reading a variable waits for the queued update.
        self.model.trainable_variables[-1].numpy()

    def train_step(self):
        t0 = time.perf_counter()
        self.model.train_on_batch(self.x, self.y)  # returns host values: synced
        return time.perf_counter() - t0

    def update_step(self):
        if self.apply is None:
            return float("nan")
        t0 = time.perf_counter()
        self.apply()
        self._sync()
        return time.perf_counter() - t0


def measure(names, args, sizes):
    import keras

    configs = configurations()
    factories = {}
    for name in names:
        ours, baseline, theirs, _ = configs[name]
        factories[name] = ours
        factories[baseline] = theirs
    order = list(factories)
    train = {n: [] for n in order}
    update = {n: [] for n in order}
    for r in range(args.repeats):
        # Fresh models every repeat, built in alternating order, so that no
        # configuration keeps a lucky or unlucky instance (memory placement
        # alone moves a step by several percent here).
        keras.backend.clear_session()
        runners = {}
        for name in order if r % 2 == 0 else order[::-1]:
            runners[name] = Runner(factories[name], sizes, args.batch_size, args.jit_compile)
            runners[name].warm_up(args.warmup)
        # Steps interleaved across configurations (alternating order), so a
        # change of load on the machine hits all of them alike.
        steps = {n: [] for n in order}
        updates = {n: [] for n in order}
        for s in range(args.steps):
            for name in order if s % 2 == 0 else order[::-1]:
                steps[name].append(runners[name].train_step())
            for name in order if s % 2 == 0 else order[::-1]:
                updates[name].append(runners[name].update_step())
        for name in order:
            train[name].append(statistics.median(steps[name]))
            update[name].append(statistics.median(updates[name]))
        del runners
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)

    rows = []
    for name in names:
        _, baseline, _, limit = configs[name]
        ratios = [a / b for a, b in zip(train[name], train[baseline])]
        update_ratios = [a / b for a, b in zip(update[name], update[baseline])]
        median_ratio = statistics.median(ratios)
        rows.append({
            "optimizer": name,
            "baseline": baseline,
            "step_ms": 1e3 * statistics.median(train[name]),
            "baseline_step_ms": 1e3 * statistics.median(train[baseline]),
            "ratio_median": median_ratio,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "ratios": ratios,
            "update_ms": 1e3 * statistics.median(update[name]),
            "baseline_update_ms": 1e3 * statistics.median(update[baseline]),
            "update_ratio_median": statistics.median(update_ratios),
            "limit": limit,
            "within_limit": median_ratio <= limit,
        })
    return rows


def markdown(rows):
    lines = [
        "| optimizer | baseline | step ms | baseline step ms | step ratio (median) | min | max "
        "| limit | update-only ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ok = "ok" if r["within_limit"] else "**over**"
        lines.append(
            f"| {r['optimizer']} | {r['baseline']} | {r['step_ms']:.2f} | {r['baseline_step_ms']:.2f} "
            f"| {r['ratio_median']:.3f} | {r['ratio_min']:.3f} | {r['ratio_max']:.3f} "
            f"| {r['limit']} ({ok}) | {r['update_ratio_median']:.2f} |"
        )
    return "\n".join(lines)


def cpu_name():
    """The CPU's model name (Linux), else what `platform` knows."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def machine():
    import keras

    info = {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        info["tensorflow"] = tf.__version__
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    return info


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, 1 repeat, 3 steps: checks that the benchmark runs")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=30,
                   help="timed steps per configuration and repeat (interleaved)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--jit-compile", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--only", default=None, help="comma-separated optimizer names")
    p.add_argument("--out", default=DEFAULT_OUT)
    args = p.parse_args(argv)
    args.jit_compile = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    if args.smoke:
        args.repeats, args.steps, args.warmup, args.batch_size = 1, 3, 1, 16
    return args


def main(argv=None):
    args = parse_args(argv)
    sizes = [16, 16, 10] if args.smoke else [512, 1024, 512, 10]
    names = list(configurations())
    if args.only:
        wanted = [n.strip() for n in args.only.split(",")]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            raise SystemExit(f"unknown optimizer(s) {unknown}; choose from {names}")
        names = wanted
    start = time.perf_counter()
    rows = measure(names, args, sizes)
    parameters = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    payload = {
        "command": " ".join(["python benchmarks/optimizer_speed.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine(),
        "model": {"sizes": sizes, "parameters": parameters, "batch_size": args.batch_size},
        "protocol": {"repeats": args.repeats, "steps_per_block": args.steps, "warmup": args.warmup,
                     "jit_compile": args.jit_compile, "order": "alternating"},
        "seconds": time.perf_counter() - start,
        "results": rows,
    }
    table = markdown(rows)
    print(table)
    print(f"\nmodel {sizes} ({parameters:,} parameters), batch {args.batch_size}, "
          f"{args.repeats} repeats x {args.steps} steps; {payload['machine']}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(payload, f, indent=2)
    return payload


if __name__ == "__main__":
    main()
