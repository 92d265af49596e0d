"""The make_hypermodel search on digits with Ray Tune: ASHA or population-based training.

    python examples/tune_digits_ray.py                      # ASHA, 16 trials, on this machine
    python examples/tune_digits_ray.py --scheduler pbt      # PBT, a population of 4
    python examples/tune_digits_ray.py --address auto       # on a running cluster (`ray start --head`)
    python examples/tune_digits_ray.py --optuna             # TPE over the conditional space, with ASHA

Needs `pip install "keras_trainkit[ray]"` (and `[optuna]` for `--optuna`). See docs/ray_tune.md.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scheduler", choices=["asha", "pbt"], default="asha")
    parser.add_argument("--trials", type=int, default=16, help="trials (ASHA) or population size (PBT)")
    parser.add_argument("--epochs", type=int, default=8, help="the most epochs of a trial")
    parser.add_argument("--optuna", action="store_true", help="Ray's OptunaSearch (define-by-run space)")
    parser.add_argument("--address", default=None, help='a running cluster ("auto"), else a local Ray')
    parser.add_argument("--storage", default=os.path.abspath("ray_results"), help="where Ray writes the run")
    parser.add_argument("--max-failures", type=int, default=1)
    args = parser.parse_args(argv)

    import ray
    from ray import tune

    from keras_trainkit.data import load_digits
    from keras_trainkit.tuning import make_hypermodel
    from keras_trainkit.tuning.ray_tune import (
        load_model,
        param_space,
        search_alg,
        trainable,
        tune_config,
    )

    (x, y), (x_val, y_val) = load_digits()
    hm = make_hypermodel(input_shape=(64,), num_classes=10, epochs=args.epochs)
    if args.scheduler == "asha":
        scheduler = tune.schedulers.ASHAScheduler(max_t=args.epochs, grace_period=1, reduction_factor=3)
    else:
        scheduler = tune.schedulers.PopulationBasedTraining(
            time_attr="training_iteration", perturbation_interval=2,
            hyperparam_mutations={"learning_rate": tune.loguniform(1e-4, 1e-1),
                                  "dropout": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]})
    ray.init(address=args.address, include_dashboard=False)
    try:
        tuner = tune.Tuner(
            trainable(hm, x, y, validation_data=(x_val, y_val)),
            param_space=None if args.optuna else param_space(hm),
            tune_config=tune_config(hm, num_samples=args.trials, scheduler=scheduler,
                                    search_alg=search_alg(hm, seed=0) if args.optuna else None),
            run_config=tune.RunConfig(storage_path=args.storage, name=f"digits_{args.scheduler}",
                                      failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
        grid = tuner.fit()
        best = grid.get_best_result()
        epochs = sum(r.metrics.get("epoch", 0) for r in grid)
        print(f"best val_accuracy {best.metrics['val_accuracy']:.4f} after {best.metrics['epoch']} epochs "
              f"({epochs} epochs in {len(grid)} trials)")
        print("best hyperparameters:", {k: v for k, v in best.config.items() if not k.endswith(".index")})
        model = load_model(hm, best)
        accuracy = model.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]
        print(f"reloaded best model: val_accuracy {accuracy:.4f}")
        return best.metrics["val_accuracy"], accuracy
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
