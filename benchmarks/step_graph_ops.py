"""Operations in the TensorFlow train step: bare, schedule compiled in, LR callbacks.

A noise-free complement to `callback_overhead.py`: during `fit()` (with the
callbacks attached) the model's `train_step` is traced once more into a
`tf.function` graph and its operations are counted by type. The LR callbacks
(`WarmUp(100)` + `CosineDecay(2000)`) should put the same operations in the
step as the same schedule compiled into the optimizer
(`WarmUp(CosineDecay(0.001, 2000), 100)`), plus the read of the optimizer's
rate variable they rebase on.

    python benchmarks/step_graph_ops.py
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, write_json  # noqa: E402

CONFIGS = ("bare", "compiled", "lr")


def count_ops(name: str) -> dict[str, int]:
    import callback_overhead as co
    import keras
    import tensorflow as tf

    from keras_trainkit import schedules as S

    x, y = co.load_data("mlp", True, 1)
    found: dict[str, int] = {}

    class Count(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            fn = tf.function(lambda a, b: self.model.train_step((a, b)))
            graph = fn.get_concrete_function(tf.TensorSpec((32, 64), "float32"),
                                             tf.TensorSpec((32,), y.dtype)).graph
            found.update(collections.Counter(op.type for op in graph.get_operations()))

    keras.utils.set_random_seed(0)
    lr = S.WarmUp(S.CosineDecay(0.001, 2000), 100) if name == "compiled" else 0.001
    model = co.build_model("mlp", lr)
    with tempfile.TemporaryDirectory() as log_dir:
        model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[*co.make_callbacks(name, log_dir), Count()])
    return found


def main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results", "step_graph_ops.json"))
    args = parser.parse_args(argv)
    counts = {name: count_ops(name) for name in CONFIGS}
    types = sorted(set().union(*counts.values()), key=lambda t: -counts["lr"].get(t, 0))
    lines = ["| configuration | operations | " + " | ".join(types[:8]) + " |", "|---" * (len(types[:8]) + 2) + "|"]
    for name in CONFIGS:
        c = counts[name]
        lines.append(f"| {name} | {sum(c.values())} | " + " | ".join(str(c.get(t, 0)) for t in types[:8]) + " |")
    table = "\n".join(lines)
    print(table)
    write_json(args.out, {"benchmark": "step_graph_ops", "machine": machine(), "counts": counts, "table": table,
                          "command": "python benchmarks/step_graph_ops.py " + " ".join(argv or sys.argv[1:])})


if __name__ == "__main__":
    main()
