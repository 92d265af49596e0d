"""OptunaSearch across real processes: a SIGKILLed search resumes, two workers share one SQLite
study, Keras Tuner's chief-and-workers mode, and the import stays light without Optuna."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

from _optuna_toys import objective  # noqa: E402
from _tuning_toys import FunctionTuner, hartmann6_objective, hartmann6_space  # noqa: E402

from keras_trainkit.tuning import OptunaOracle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_optuna_worker.py")
TS = optuna.trial.TrialState


def worker(*args, env=None):
    return subprocess.Popen([sys.executable, WORKER, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def finish(procs, timeout=240):
    try:
        out = {k: p.communicate(timeout=timeout) for k, p in procs.items()}
    finally:
        for p in procs.values():
            p.kill()
    return out


def lines(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    log = tmp_path / "evaluations.jsonl"
    proc = worker("resume", tmp_path / "run", url, 9, 1, log)
    killed = finish({"k": proc})["k"]
    assert proc.returncode == -signal.SIGKILL, killed[1][-2000:]
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.state for t in study.trials] == [TS.COMPLETE] * 8 + [TS.RUNNING]
    running_params = study.trials[8].params
    before = lines(log)
    assert len(before) == 9, killed[1][-2000:]

    proc = worker("resume", tmp_path / "run", url, "none", 0, log)
    resumed = finish({"r": proc})["r"]
    assert proc.returncode == 0, resumed[1][-2000:]
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.state for t in study.trials] == [TS.COMPLETE] * 14, resumed[1][-2000:]
    assert [t.number for t in study.trials] == list(range(14))
    # The trial that was running when the process died ran again, as the same Optuna trial.
    assert study.trials[8].params == running_params
    after = lines(log)[9:]
    assert after[0] == before[8] and len(after) == 6  # the rerun + five new trials
    assert len({json.dumps(v, sort_keys=True) for v in before + after}) == 14  # nothing else repeated
    # The Keras Tuner project agrees with the study.
    trials = {}
    for name in sorted(os.listdir(tmp_path / "run" / "p")):
        if name.startswith("trial_"):
            with open(tmp_path / "run" / "p" / name / "trial.json") as f:
                t = json.load(f)
            trials[t["trial_id"]] = t
    assert sorted(trials) == [f"{i:02d}" for i in range(14)]
    for t, ft in zip((trials[k] for k in sorted(trials)), study.trials):
        assert t["status"] == "COMPLETED" and t["score"] == pytest.approx(ft.value)
        assert t["hyperparameters"]["values"] == {k: ft.params[k] for k in t["hyperparameters"]["values"]}
        assert ft.value == pytest.approx(hartmann6_objective(t["hyperparameters"]["values"]))
    # The first trials are those of the same seeded search run in one go.
    oracle = OptunaOracle(objective=objective(), max_trials=9, seed=0, hyperparameters=hartmann6_space())
    reference = FunctionTuner(hartmann6_objective, oracle=oracle, directory=str(tmp_path / "ref"), project_name="p")
    reference.oracle.verbose = 0
    reference.search(verbose=0)
    assert [t.params for t in reference.oracle.study.trials] == [t.params for t in study.trials[:9]]


def test_two_workers_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(storage=url, study_name="shared")  # created once, as a deployment would
    procs = {k: worker("concurrent", tmp_path / k, url, tmp_path / f"{k}.jsonl") for k in ("a", "b")}
    out = finish(procs)
    for k, p in procs.items():
        assert p.returncode == 0, out[k][1][-2000:]
    study = optuna.load_study(study_name="shared", storage=url)
    counted = [t for t in study.trials if not t.user_attrs.get("keras_tuner.surplus")]
    assert len(counted) == 10 and all(t.state == TS.COMPLETE for t in counted)
    assert all(t.state == TS.FAIL for t in study.trials if t not in counted)  # lost races, if any
    ran = {k: lines(tmp_path / f"{k}.jsonl") for k in ("a", "b")}
    assert ran["a"] and ran["b"]  # both workers ran trials
    everything = [json.dumps(v, sort_keys=True) for v in ran["a"] + ran["b"]]
    assert len(everything) == 10 and len(set(everything)) == 10
    # Each worker's project holds its own trials, named by their Optuna numbers.
    owners = {}
    for k in ("a", "b"):
        ids = sorted(n for n in os.listdir(tmp_path / k / "p") if n.startswith("trial_"))
        assert len(ids) == len(ran[k])
        owners[k] = {t.user_attrs["keras_tuner"]["owner"] for t in counted
                     if f"trial_{t.user_attrs['keras_tuner']['trial_id']}" in ids}
        assert len(owners[k]) == 1
    assert owners["a"] != owners["b"]


def test_chief_and_workers_prune_over_grpc(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    procs = {k: worker("distributed", tmp_path / k, tmp_path / f"{k}.jsonl", env={**env, "KERASTUNER_TUNER_ID": k})
             for k in ("chief", "tuner0", "tuner1")}
    out = finish(procs)
    for k, p in procs.items():
        assert p.returncode == 0, (k, out[k][1][-2000:])
    chief = json.loads(out["chief"][0].strip().splitlines()[-1])
    assert len(chief["states"]) == 10 and set(chief["states"]) <= {"COMPLETE", "PRUNED"}
    assert "PRUNED" in chief["states"]  # the MedianPruner stopped trials through the workers
    assert all(status == "COMPLETED" for status, _ in chief["kt"].values())
    pruned_ids = {i for i, (_, message) in chief["kt"].items() if message}
    assert len(pruned_ids) == chief["states"].count("PRUNED")
    epochs = {}
    for k in ("tuner0", "tuner1"):
        epochs.update(json.loads(out[k][0].strip().splitlines()[-1])["epochs_run"])
    assert sorted(epochs) == sorted(chief["kt"])  # both workers' trials, each run once
    for trial_id, n in epochs.items():
        # Each fit ran exactly the epochs the chief's study received: a pruned trial stopped
        # at the epoch the pruner answered STOPPED (possibly the last), the others ran all 3.
        assert n == chief["intermediate"][int(trial_id)]
        assert n == 3 or trial_id in pruned_ids
    assert any(epochs[i] < 3 for i in pruned_ids)  # and some stopped early
    ran = [json.dumps(v, sort_keys=True) for k in ("tuner0", "tuner1") for v in lines(tmp_path / f"{k}.jsonl")]
    assert len(ran) == 10 and len(set(ran)) == 10
    assert lines(tmp_path / "tuner0.jsonl") and lines(tmp_path / "tuner1.jsonl")


def test_import_is_light_and_optuna_search_names_the_extra_without_optuna():
    code = (
        "import sys\n"
        "import keras_trainkit, keras_trainkit.tuning\n"
        "assert 'optuna' not in sys.modules, 'import keras_trainkit imported optuna'\n"
        "from keras_trainkit.tuning import OptunaSearch\n"
        "assert 'optuna' not in sys.modules\n"
        "sys.modules['optuna'] = None  # as if it were not installed\n"
        "try:\n"
        "    OptunaSearch(lambda hp: None, objective='val_loss')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'pip install "keras_trainkit[optuna]"' in result.stdout

