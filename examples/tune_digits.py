"""A small genetic search over the whole training recipe on scikit-learn's digits.

    python examples/tune_digits.py [--trials 12] [--epochs 4] [--dir /tmp/tune_digits]
                                   [--plot search.png] [--verbose 1]

Tunes learning rate, optimizer, batch size, LR schedule and warm-up, L1/L2,
dropout and the MLP's shape with keras_trainkit's GeneticSearch, then prints
the best hyperparameters and validation accuracy and saves a picture of the
search (score per trial with the best so far, and the score against each
hyperparameter). Runs offline in about a minute on a laptop CPU.

While it runs, the search shows its progress: "Trial i of N" with the trial's
hyperparameters, Keras' epoch progress bar, the trial's score, the best score
so far, the elapsed time and an estimate of the time left. `--verbose 0`
silences it. Add `--tensorboard DIR` to get one TensorBoard run per trial
(with its hyperparameters and the learning-rate and gradient-norm scalars).
Rerun with `--resume` after stopping it (even with kill -9) to continue the
same search.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from keras_trainkit.callbacks import TensorBoard  # noqa: E402
from keras_trainkit.data import load_digits  # noqa: E402
from keras_trainkit.plotting import plot_search  # noqa: E402
from keras_trainkit.tuning import GeneticSearch, make_hypermodel  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "keras_trainkit_tune_digits"))
    parser.add_argument("--plot", default=None,
                        help="PNG of the search (default: <dir>/digits_search.png)")
    parser.add_argument("--tensorboard", default=None, help="TensorBoard log dir (optional)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", type=int, default=1, help="0 silences the progress display")
    parser.add_argument("--resume", action="store_true", help="continue the search in --dir")
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
                          project_name="digits", overwrite=not args.resume)
    callbacks = [TensorBoard(args.tensorboard)] if args.tensorboard else []
    tuner.search(x, y, validation_data=(x_val, y_val), callbacks=callbacks, verbose=args.verbose)

    best_trial = tuner.oracle.get_best_trials(1)[0]
    print(f"\nbest validation accuracy: {best_trial.score:.4f} (trial {best_trial.trial_id})")
    print("best hyperparameters:")
    for name, value in sorted(best_trial.hyperparameters.values.items()):
        print(f"  {name}: {value}")
    plot = args.plot or os.path.join(args.dir, "digits_search.png")
    plot_search(tuner, path=plot)
    print(f"search plot: {plot}")
    return best_trial


if __name__ == "__main__":
    main()
