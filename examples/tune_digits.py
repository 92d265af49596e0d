"""A small genetic search over the whole training recipe on scikit-learn's digits.

    python examples/tune_digits.py [--trials 12] [--epochs 4] [--dir /tmp/tune_digits]

Tunes learning rate, optimizer, batch size, LR schedule and warm-up, L1/L2,
dropout and the MLP's shape with keras_trainkit's GeneticSearch, then prints
the best hyperparameters and validation accuracy. Runs offline in about a
minute on a laptop CPU. Add `--tensorboard DIR` to get one TensorBoard run per
trial (with its hyperparameters and the learning-rate and gradient-norm
scalars).
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from keras_trainkit.callbacks import TensorBoard  # noqa: E402
from keras_trainkit.data import load_digits  # noqa: E402
from keras_trainkit.tuning import GeneticSearch, make_hypermodel  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "keras_trainkit_tune_digits"))
    parser.add_argument("--tensorboard", default=None, help="TensorBoard log dir (optional)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    (x, y), (x_val, y_val) = load_digits()
    hypermodel = make_hypermodel(
        input_shape=(64,), num_classes=10, epochs=args.epochs, early_stopping_patience=2,
        log_grad_norm=10,
        # Narrow the default space a little so that a dozen trials say something.
        search_space={"num_layers": {"max_value": 2}, "units_0": {"max_value": 256},
                      "units_1": {"max_value": 256}, "batch_size": [32, 64, 128]},
    )
    tuner = GeneticSearch(hypermodel, objective=hypermodel.objective, max_trials=args.trials,
                          population_size=6, seed=args.seed, directory=args.dir,
                          project_name="digits", overwrite=True)
    callbacks = [TensorBoard(args.tensorboard)] if args.tensorboard else []
    tuner.search(x, y, validation_data=(x_val, y_val), callbacks=callbacks, verbose=0)

    best_trial = tuner.oracle.get_best_trials(1)[0]
    print(f"\nbest validation accuracy: {best_trial.score:.4f} (trial {best_trial.trial_id})")
    print("best hyperparameters:")
    for name, value in sorted(best_trial.hyperparameters.values.items()):
        print(f"  {name}: {value}")
    return best_trial


if __name__ == "__main__":
    main()
