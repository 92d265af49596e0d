"""GeneticOracle / GeneticSearch: operators, determinism, resume, distributed mode."""

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import keras_tuner
import numpy as np
import pytest
from _tuning_toys import (
    HARTMANN6_OPT,
    FunctionTuner,
    hartmann6_objective,
    hartmann6_space,
)
from keras_tuner.engine import hyperparameters as hp_module

from keras_trainkit.tuning import GeneticOracle, GeneticSearch

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def fast_path(tmp_path):
    """A directory on tmpfs when there is one: the algorithm tests below run hundreds of
    trials, and each atomic save of the project files costs two fsyncs (~90 ms a trial
    on this project's disks, ~4 ms on tmpfs). Storage itself is tested with tmp_path."""
    import shutil
    import tempfile

    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        directory = tempfile.mkdtemp(dir="/dev/shm", prefix="trainkit-test-")
        yield directory
        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path


def mixed_space():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-5, 1e-1, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.05)
    hp.Int("layers", 1, 3)
    for i in range(3):
        with hp.conditional_scope("layers", list(range(i + 1, 4))):
            hp.Int(f"units_{i}", 16, 256, step=16)
    hp.Choice("optimizer", ["adam", "sgd", "rmsprop"])
    with hp.conditional_scope("optimizer", ["sgd"]):
        hp.Float("momentum", 0.0, 0.99)
    hp.Choice("batch_size", [16, 32, 64, 128], ordered=True)
    hp.Boolean("batchnorm")
    hp.Fixed("loss", "mse")
    return hp


def check_valid(space, values):
    hps = space.copy()
    hps.values = dict(values)
    for hp in space.space:
        active = hps.is_active(hp)
        assert (hp.name in values) == active, (hp.name, values)
        if not active:
            continue
        v = values[hp.name]
        if isinstance(hp, hp_module.Float):
            assert isinstance(v, float) and hp.min_value <= v <= hp.max_value
            if hp.step:
                assert abs((v - hp.min_value) / hp.step - round((v - hp.min_value) / hp.step)) < 1e-6
        elif isinstance(hp, hp_module.Int):
            assert isinstance(v, int) and hp.min_value <= v <= hp.max_value and (v - hp.min_value) % hp.step == 0
        elif isinstance(hp, hp_module.Boolean):
            assert isinstance(v, bool)
        elif isinstance(hp, hp_module.Choice):
            assert v in hp.values
        elif isinstance(hp, hp_module.Fixed):
            assert v == hp.value


def run_search(tmp_path, fn, space, seed=0, max_trials=40, name="p", direction="min", **kw):
    oracle = GeneticOracle(objective=keras_tuner.Objective("score", direction), max_trials=max_trials,
                           seed=seed, hyperparameters=space, **kw)
    tuner = FunctionTuner(fn, oracle=oracle, directory=str(tmp_path), project_name=name, overwrite=True)
    tuner.oracle.verbose = 0
    tuner.search(verbose=0)
    return tuner


def trial_values(tuner):
    return [tuner.oracle.trials[t].hyperparameters.values for t in sorted(tuner.oracle.trials)]


def test_children_respect_types_ranges_and_conditions(fast_path):
    space = mixed_space()
    score = lambda v: -v["lr"] * v.get("units_0", 0) + v["dropout"]  # noqa: E731
    tuner = run_search(fast_path, score, space, max_trials=80, population_size=6, mutation_rate=0.5)
    values = trial_values(tuner)
    assert len(values) == 80
    for v in values:
        check_valid(space, v)
    # Conditional branches are both explored and cleaned up.
    assert any("momentum" in v for v in values) and any("momentum" not in v for v in values)
    assert {v["layers"] for v in values} == {1, 2, 3}


def test_log_scale_floats_mutate_in_log_space():
    hp = hp_module.Float("lr", 1e-6, 1.0, sampling="log")
    rng = np.random.default_rng(0)
    moves = np.array([math.log10(GeneticOracle._mutate(rng, hp, 1e-3, 0.1) / 1e-3) for _ in range(2000)])
    # 0.1 of the probability range is 0.6 decades of a 6-decade log range.
    assert abs(np.median(moves)) < 0.05
    assert np.std(moves) == pytest.approx(0.6, rel=0.1)
    linear = hp_module.Float("x", 0.0, 10.0)
    lin_moves = np.array([GeneticOracle._mutate(rng, linear, 5.0, 0.1) - 5.0 for _ in range(2000)])
    assert np.std(lin_moves) == pytest.approx(1.0, rel=0.1)


def test_discrete_mutations():
    rng = np.random.default_rng(0)
    choice = hp_module.Choice("c", ["a", "b", "c"])
    assert all(GeneticOracle._mutate(rng, choice, "b", 0.1) != "b" for _ in range(50))
    ordered = hp_module.Choice("o", [16, 32, 64, 128], ordered=True)
    assert {GeneticOracle._mutate(rng, ordered, 32, 0.1) for _ in range(50)} == {16, 64}
    assert GeneticOracle._mutate(rng, hp_module.Boolean("b"), True, 0.1) is False
    assert GeneticOracle._mutate(rng, hp_module.Fixed("f", 3), 3, 0.1) == 3
    integer = hp_module.Int("i", 1, 9, step=2)
    assert all(GeneticOracle._mutate(rng, integer, 5, 0.01) in (3, 7) for _ in range(20))


@pytest.mark.parametrize("direction", ["min", "max"])
def test_tournament_honours_the_objective_direction(fast_path, direction):
    space = keras_tuner.HyperParameters()
    space.Float("x", 0.0, 1.0)
    tuner = run_search(fast_path, lambda v: v["x"], space, max_trials=40, direction=direction,
                       population_size=8)
    xs = [v["x"] for v in trial_values(tuner)]
    late = np.mean(xs[-15:])
    assert late < 0.25 if direction == "min" else late > 0.75
    best = tuner.oracle.get_best_trials(1)[0].hyperparameters.values["x"]
    assert best == (min(xs) if direction == "min" else max(xs))


def test_no_duplicates_and_stops_when_exhausted(fast_path):
    space = keras_tuner.HyperParameters()
    space.Choice("a", [1, 2, 3])
    space.Boolean("b")
    tuner = run_search(fast_path, lambda v: v["a"] + v["b"], space, max_trials=50, population_size=2,
                       tournament_size=2)
    values = [tuple(sorted(v.items())) for v in trial_values(tuner)]
    assert len(values) == len(set(values)) == 6


def test_reproducible_with_any_seed_including_zero(fast_path):
    def values(seed, name):
        return trial_values(run_search(fast_path, hartmann6_objective, hartmann6_space(), seed=seed,
                                       max_trials=25, name=name, population_size=5))

    assert values(0, "a") == values(0, "b")
    assert values(0, "a") != values(1, "c")
    assert GeneticOracle(seed=0).seed == 0


def test_beats_random_search_on_hartmann6(fast_path):
    def regret(oracle):
        tuner = FunctionTuner(hartmann6_objective, oracle=oracle, directory=str(fast_path),
                              project_name="h", overwrite=True)
        tuner.oracle.verbose = 0
        tuner.search(verbose=0)
        return min(t.score for t in tuner.oracle.trials.values()) - HARTMANN6_OPT

    objective = keras_tuner.Objective("score", "min")
    ga, rs = [], []
    for seed in range(4):
        ga.append(regret(GeneticOracle(objective=objective, max_trials=60, seed=seed,
                                       hyperparameters=hartmann6_space())))
        rs.append(regret(keras_tuner.oracles.RandomSearchOracle(
            objective=objective, max_trials=60, seed=seed + 1, hyperparameters=hartmann6_space())))
    assert np.mean(ga) < np.mean(rs)


def test_state_round_trip(fast_path):
    tuner = run_search(fast_path, hartmann6_objective, hartmann6_space(), seed=7, max_trials=12,
                       population_size=4, elitism=1, mutation_scale=0.2)
    state = json.loads(json.dumps(tuner.oracle.get_state()))
    fresh = GeneticOracle(objective=keras_tuner.Objective("score", "min"), seed=3)
    fresh.trials = tuner.oracle.trials
    fresh.set_state(state)
    assert fresh.seed == 7
    assert fresh.genetic_settings == tuner.oracle.genetic_settings
    assert fresh.genetic_settings["mutation_scale"] == 0.2
    a = fresh.populate_space("12")
    b = tuner.oracle.populate_space("12")
    assert a == b and a["values"] is not None


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from _tuning_toys import hartmann6_objective
    from test_genetic import resume_tuner
    directory, kill_at, overwrite = sys.argv[1], sys.argv[2], sys.argv[3] == "1"

    def score(values, _seen=[]):
        _seen.append(1)
        if kill_at != "none" and len(_seen) == int(kill_at):
            os.kill(os.getpid(), signal.SIGKILL)
        return hartmann6_objective(values)

    resume_tuner(score, directory, overwrite).search(verbose=0)
""")


def resume_tuner(score, directory, overwrite):
    oracle = GeneticOracle(objective=keras_tuner.Objective("score", "min"), max_trials=14,
                           population_size=4, seed=0, hyperparameters=hartmann6_space())
    tuner = FunctionTuner(score, oracle=oracle, directory=str(directory), project_name="p",
                          overwrite=overwrite)
    tuner.oracle.verbose = 0
    return tuner


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT.format(tests=HERE))

    def run(directory, kill_at, overwrite):
        return subprocess.run([sys.executable, str(script), str(directory), kill_at, overwrite],
                              capture_output=True, text=True, timeout=300)

    # The uninterrupted reference runs here: the search is deterministic given its seed.
    resume_tuner(hartmann6_objective, tmp_path / "full", True).search(verbose=0)
    killed = run(tmp_path / "killed", "9", "1")
    assert killed.returncode == -signal.SIGKILL
    before = {t for t in os.listdir(tmp_path / "killed" / "p") if t.startswith("trial_")}
    assert len(before) == 9  # eight completed, the ninth was running
    resumed = run(tmp_path / "killed", "none", "0")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    def trials(directory):
        out = {}
        for name in sorted(os.listdir(directory / "p")):
            if name.startswith("trial_"):
                with open(directory / "p" / name / "trial.json") as f:
                    t = json.load(f)
                out[t["trial_id"]] = (t["status"], t["hyperparameters"]["values"], t["score"])
        return out

    full_trials, resumed_trials = trials(tmp_path / "full"), trials(tmp_path / "killed")
    assert len(resumed_trials) == 14
    assert all(status == "COMPLETED" for status, _, _ in resumed_trials.values())
    assert resumed_trials == full_trials  # the same search as if never interrupted
    with open(tmp_path / "killed" / "p" / "oracle.json") as f:
        end_order = json.load(f)["end_order"]
    assert sorted(end_order) == sorted(full_trials) and len(end_order) == len(set(end_order))


DISTRIBUTED_SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    sys.path.insert(0, {tests!r})
    import keras_tuner
    from _tuning_toys import FunctionTuner, hartmann6_objective, hartmann6_space
    from keras_trainkit.tuning import GeneticOracle, TrainkitTunerMixin
    directory, log = sys.argv[1], sys.argv[2]

    class Tuner(TrainkitTunerMixin, FunctionTuner):
        pass

    def score(values):
        time.sleep(0.5)  # long enough for both workers to take trials
        with open(log, "a") as f:
            f.write(json.dumps(values, sort_keys=True) + "\\n")
        return hartmann6_objective(values)

    oracle = GeneticOracle(objective=keras_tuner.Objective("score", "min"), max_trials=12,
                           population_size=4, seed=0, hyperparameters=hartmann6_space())
    tuner = Tuner(score, oracle=oracle, directory=directory, project_name="p")
    tuner.search()  # default verbosity: the progress display is on
    if os.environ["KERASTUNER_TUNER_ID"] == "chief":
        trials = tuner.oracle.trials.values()
        print(json.dumps({{"completed": sum(t.status == "COMPLETED" for t in trials),
                          "n": len(trials)}}))
""")

# Every line the chief's progress display prints (whole lines, never mixed).
CHIEF_LINE = re.compile("|".join([
    r"", r"Search: Running Trial #\d+ of 12", r"Value +\|Best Value So Far \|Hyperparameter",
    r"[-+.e\d]+ +\|([-+.e\d]+|\?) +\|x\d", r"Trial \d+ of 12 Complete \[\d\dh \d\dm \d\ds\]",
    r"score: -?[.\de-]+", r"Best score So Far: -?[.\de-]+", r"Total elapsed time: \d\dh \d\dm \d\ds",
    r"Estimated time left: \d\dh \d\dm \d\ds( \(at most \d+ more trials?, ~\d+s each(, 2 at a time)?\))?",
    r"Estimated time left: unknown", r"Oracle server on chief is exiting in \d+s.*", r'\{"completed".*',
]))


def test_distributed_chief_and_two_workers(tmp_path):
    script = tmp_path / "dist.py"
    script.write_text(DISTRIBUTED_SCRIPT.format(tests=HERE))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / tuner_id), str(tmp_path / f"{tuner_id}.log")],
            env={**env, "KERASTUNER_TUNER_ID": tuner_id}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
    try:
        outputs = {k: p.communicate(timeout=240) for k, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    for k, p in procs.items():
        assert p.returncode == 0, (k, outputs[k][1][-2000:])
    summary = json.loads(outputs["chief"][0].strip().splitlines()[-1])
    assert summary == {"completed": 12, "n": 12}
    runs = {k: (tmp_path / f"{k}.log").read_text().splitlines()
            for k in ("tuner0", "tuner1") if (tmp_path / f"{k}.log").exists()}
    assert set(runs) == {"tuner0", "tuner1"} and all(runs.values())  # both workers ran trials
    everything = runs["tuner0"] + runs["tuner1"]
    assert len(everything) == 12 and len(set(everything)) == 12
    # Progress: the chief shows every trial (of 12) with its table, score and time left,
    # in whole lines; each worker prints one line per trial it starts and ends.
    chief = outputs["chief"][0]
    bad = [line for line in chief.splitlines() if not CHIEF_LINE.fullmatch(line)]
    assert not bad, bad[:5]
    for i in range(1, 13):
        assert chief.count(f"Search: Running Trial #{i} of 12\n") == 1
        assert chief.count(f"Trial {i} of 12 Complete [") == 1
    assert "2 at a time" in chief
    for k in ("tuner0", "tuner1"):
        lines = outputs[k][0].splitlines()
        started = [x for x in lines if re.fullmatch(rf"\[{k}\] Trial \d+ started: x0=[.\d]+, .*x5=[.\d]+", x)]
        ended = [x for x in lines if re.fullmatch(rf"\[{k}\] Trial \d+ ended \(COMPLETED\) after \d+s", x)]
        assert len(started) == len(ended) == len(runs[k]), lines
        assert "\r" not in outputs[k][0]


@pytest.mark.parametrize("kwargs,arg", [
    (dict(population_size=1), "population_size"),
    (dict(population_size=4, tournament_size=5), "tournament_size"),
    (dict(tournament_size=0), "tournament_size"),
    (dict(crossover_rate=1.5), "crossover_rate"),
    (dict(mutation_rate=-0.1), "mutation_rate"),
    (dict(mutation_scale=0.0), "mutation_scale"),
    (dict(elitism=-1), "elitism"),
    (dict(population_size=3, elitism=4), "elitism"),
    (dict(seed=-3), "seed"),
    (dict(seed=1.5), "seed"),
    (dict(max_trials=0), "max_trials"),
])
def test_bad_settings_raise_fatal_value_error(kwargs, arg):
    with pytest.raises(keras_tuner.errors.FatalValueError, match=f"`{arg}`"):
        GeneticOracle(**kwargs)
    with pytest.raises(ValueError, match=f"`{arg}`"):
        GeneticSearch(hypermodel=lambda hp: None, objective="val_loss", **kwargs)
