"""Live progress of a search (and its silence at verbose=0), and `plot_search`."""

import re

import keras_tuner
import numpy as np
import pytest
from _tuning_toys import FunctionTuner

from keras_trainkit.data import load_digits
from keras_trainkit.plotting import plot_search, search_results
from keras_trainkit.tuning import (
    GeneticOracle,
    GeneticSearch,
    TrainkitTunerMixin,
    make_hypermodel,
)


class Tuner(TrainkitTunerMixin, FunctionTuner):
    pass


def space():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Choice("optimizer", ["adam", "sgd"])
    hp.Int("units", 8, 64, step=8)
    hp.Fixed("loss", "mse")
    return hp


def score(values):
    return np.log10(values["lr"]) ** 2 + (values["optimizer"] == "sgd") + values["units"] / 100


def run(tmp_path, verbose, max_trials=4, fn=score):
    oracle = GeneticOracle(objective=keras_tuner.Objective("score", "min"), max_trials=max_trials,
                           population_size=2, tournament_size=2, seed=0, hyperparameters=space())
    tuner = Tuner(fn, oracle=oracle, directory=str(tmp_path), project_name="p", overwrite=True)
    tuner.search(**({} if verbose is None else {"verbose": verbose}))
    return tuner


def test_progress_shows_trial_i_of_n_score_best_elapsed_and_time_left(tmp_path, capsys):
    tuner = run(tmp_path, verbose=None)  # default: on
    out = capsys.readouterr().out
    for i in range(1, 5):
        assert f"Search: Running Trial #{i} of 4\n" in out
        assert re.search(rf"Trial {i} of 4 Complete \[\d\dh \d\dm \d\ds\]\nscore: [-.\de]+\n", out)
    assert out.count("Value             |Best Value So Far |Hyperparameter") == 4
    assert re.search(r"adam|sgd +\|(adam|sgd) +\|optimizer", out)
    scores = [t.score for t in tuner.oracle.trials.values()]
    best = [float(b) for b in re.findall(r"Best score So Far: ([-.\de]+)", out)]
    in_end_order = [tuner.oracle.trials[t].score for t in tuner.oracle.end_order]
    assert best == pytest.approx(np.minimum.accumulate(in_end_order).tolist())
    assert best[-1] == pytest.approx(min(scores))
    assert len(re.findall(r"Total elapsed time: \d\dh \d\dm \d\ds", out)) == 4
    left = re.findall(r"Estimated time left: (.*)", out)
    assert len(left) == 4
    assert re.fullmatch(r"\d\dh \d\dm \d\ds \(at most 3 more trials, ~\d+s each\)", left[0])
    assert left[-1] == "00h 00m 00s"
    assert "\x1b[" not in out  # no terminal escape codes written into logs


def test_verbose_0_silences_the_search(tmp_path, capsys):
    run(tmp_path, verbose=0)
    assert capsys.readouterr().out == ""


def test_a_failed_trial_is_reported_as_failed(tmp_path, capsys):
    def fn(values):
        if values["optimizer"] == "sgd":
            raise RuntimeError("no sgd today")
        return score(values)

    run(tmp_path, verbose=1, fn=fn, max_trials=6)
    out = capsys.readouterr().out
    assert re.search(r"Trial \d of 6 failed \[\d\dh \d\dm \d\ds\]: RuntimeError: no sgd today", out)


# Few conditional branches: the tuner's constructor builds a model per branch.
FIXED = {"num_layers": 1, "units_0": 16, "batch_size": 64, "optimizer": "adam", "lr_schedule": "cosine"}


@pytest.fixture(scope="module")
def digits():
    (x, y), (xv, yv) = load_digits()
    return (x[:200], y[:200]), (xv[:100], yv[:100])


@pytest.mark.parametrize("verbose", [None, pytest.param(0, marks=pytest.mark.long)])
def test_a_real_search_shows_epoch_progress_and_verbose_0_silences_it(tmp_path, digits, capsys, verbose):
    (x, y), val = digits
    hm = make_hypermodel((64,), 10, epochs=2, search_space=FIXED)
    tuner = GeneticSearch(hm, max_trials=1, population_size=2, tournament_size=2, seed=0,
                          directory=str(tmp_path), project_name="v", overwrite=True)
    capsys.readouterr()
    tuner.search(x, y, validation_data=val, **({} if verbose is None else {"verbose": verbose}))
    out = capsys.readouterr().out
    if verbose is None:  # the default: on
        assert "Search: Running Trial #1 of 1" in out
        assert "Epoch 1/2" in out and "Epoch 2/2" in out and "val_accuracy" in out  # Keras' bar
        assert "Trial 1 of 1 Complete" in out and "Best val_accuracy So Far" in out
    else:
        assert out == ""


def test_distributed_workers_print_epochs_line_by_line(digits, capsys, monkeypatch):
    (x, y), val = digits
    hm = make_hypermodel((64,), 10, epochs=2, search_space=FIXED)
    hp = keras_tuner.HyperParameters()
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "1")
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner3")
    capsys.readouterr()
    hm.fit(hp, hm.build(hp), x, y, validation_data=val)
    out = capsys.readouterr().out
    # verbose=2: one complete line per epoch, no carriage-return progress bar
    assert "\r" not in out and out.count("Epoch ") == 2 and len(re.findall(r"val_accuracy", out)) == 2


# -- plot_search --------------------------------------------------------------------
def test_plot_search_draws_scores_best_so_far_and_each_hyperparameter(tmp_path):
    tuner = run(tmp_path, verbose=0, max_trials=8)
    results = search_results(tuner)
    completed = [tuner.oracle.trials[t] for t in tuner.oracle.end_order]
    assert results["scores"].tolist() == [t.score for t in completed]
    np.testing.assert_allclose(results["best_so_far"], np.minimum.accumulate([t.score for t in completed]))
    png = tmp_path / "search.png"
    fig = plot_search(tuner, path=str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one panel for the scores, one per hyperparameter (the Fixed one left out)
    assert [ax.get_xlabel() for ax in fig.axes] == ["trial (in the order they ended)", "lr", "optimizer", "units"]
    scores_ax, lr_ax, opt_ax, units_ax = fig.axes
    dots, best = scores_ax.lines[:2]
    np.testing.assert_allclose(dots.get_ydata(), results["scores"])
    np.testing.assert_allclose(best.get_ydata(), results["best_so_far"])
    assert lr_ax.get_xscale() == "log" and units_ax.get_xscale() == "linear"
    np.testing.assert_allclose(lr_ax.lines[0].get_xdata(), [v["lr"] for v in results["values"]])
    assert [t.get_text() for t in opt_ax.get_xticklabels()] == ["adam", "sgd"]
    star = lr_ax.lines[-1]  # the best trial
    assert star.get_ydata()[0] == pytest.approx(min(results["scores"]))
    with pytest.raises(ValueError, match="`hyperparameters`"):
        plot_search(tuner, hyperparameters=["nope"])
    with pytest.raises(ValueError, match="`ncols`"):
        plot_search(tuner, ncols=0)
