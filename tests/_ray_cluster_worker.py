"""A search on a simulated two-node Ray cluster (`ray.cluster_utils.Cluster`, as
Ray's own tests do): a head and a worker node of one CPU each, so two trials of
one CPU run one on each node. Run by tests/test_ray_tune.py in its own process
(the test module has its own local Ray instance); prints one JSON line.

    python tests/_ray_cluster_worker.py OUT_DIR
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _ray_helpers  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from keras_trainkit.data import load_digits  # noqa: E402
from keras_trainkit.tuning import make_hypermodel  # noqa: E402
from keras_trainkit.tuning.ray_tune import search_alg, trainable, tune_config  # noqa: E402


def main(out):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
    cluster.wait_for_nodes()
    ray.cloudpickle.register_pickle_by_value(_ray_helpers)
    try:
        (x, y), (xv, yv) = load_digits()
        hm = make_hypermodel((64,), 10, epochs=2, search_space={"num_layers": [1, 2], "units_0": 32,
                                                                 "units_1": 32})
        log = os.path.join(out, "epochs")
        os.makedirs(log)
        tuner = tune.Tuner(
            trainable(hm, x[:400], y[:400], validation_data=(xv, yv),
                      callbacks=[_ray_helpers.RateRecorder(log, per_update=False)]),
            tune_config=tune_config(hm, num_samples=2, search_alg=search_alg(hm, seed=0)),
            run_config=tune.RunConfig(storage_path=os.path.join(out, "runs"), verbose=0))
        grid = tuner.fit()
        records = _ray_helpers.read_epochs(log)
        print(json.dumps({
            "nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
            "trial_nodes": {r["trial"]: r["node"] for r in records},
            "errors": [str(e) for e in grid.errors],
            "epochs": sorted(r.metrics["epoch"] for r in grid),
            "configs": [r.config for r in grid],
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
