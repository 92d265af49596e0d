"""Batch-size schedules, ScheduledBatches and BatchSizeScheduler.

The fit() tests count what the model itself sees: a layer tallies, inside the
compiled train step, how often each sample index and each batch size went
through it, so the accounting is exact and independent of the wrapper.
"""

import copy
import math
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_trainkit import callbacks as C
from keras_trainkit import data as D
from keras_trainkit import schedules as S

N = 103  # prime: every batch size leaves a partial last batch


# -- schedules ---------------------------------------------------------------------------
def round_half_up(x):
    return np.floor(np.asarray(x, dtype="float64") + 0.5).astype(int)


@pytest.mark.parametrize("b0,T,power,end", [(128, 4, 1.0, 0), (100, 7, 0.5, 10), (64, 3, 2.0, 1)])
def test_decay_matches_closed_form(b0, T, power, end):
    s = S.BatchSizeDecay(b0, decay_epochs=T, power=power, end_batch_size=end)
    e = np.arange(0, T + 4)
    expected = np.maximum(1, round_half_up((b0 - end) * (1 - np.minimum(e, T) / T) ** power + end))
    assert [s(int(i)) for i in e] == expected.tolist()
    assert s(0) == b0 and s(T) == max(1, end) and s(T + 100) == max(1, end)
    assert all(a >= b for a, b in zip(expected, expected[1:]))  # never increases


def test_golden_values():
    assert [S.BatchSizeDecay(128, 4, end_batch_size=0)(e) for e in range(6)] == [128, 96, 64, 32, 1, 1]
    assert [S.BatchSizeDecay(100, 7, 0.5, 10)(e) for e in range(8)] == [100, 93, 86, 78, 69, 58, 44, 10]
    s = S.BatchSizeIncrease(32, factor=5, milestones=[2, 4, 6], max_batch_size=1000)
    assert [s(e) for e in range(8)] == [32, 32, 160, 160, 800, 800, 1000, 1000]
    assert [s.learning_rate_factor(e) for e in range(8)] == [1, 1, 1, 1, 1, 1, 0.25, 0.25]
    s = S.BatchSizeIncrease(10, factor=1.5, step_size=2)
    assert [s(e) for e in range(7)] == [10, 10, 15, 15, 23, 23, 34]  # 22.5 rounds half up
    assert s.learning_rate_factor(100) == 1.0


def test_increase_caps_and_hands_the_rest_to_the_learning_rate():
    s = S.BatchSizeIncrease(16, factor=2, step_size=1, max_batch_size=100)
    for e in range(8):
        requested = 16 * 2**e
        assert s.requested(e) == requested
        assert s(e) == min(requested, 100)
        # Smith et al.: once capped, the rate takes over the remaining factor.
        assert s.learning_rate_factor(e) == pytest.approx(min(1.0, 100 / requested))
        assert s(e) / s.learning_rate_factor(e) == pytest.approx(requested)


@pytest.mark.parametrize("schedule", [
    S.BatchSizeDecay(64, 5, 1.5, 4),
    S.BatchSizeIncrease(8, 3.0, milestones=[1, 5], max_batch_size=50),
    S.BatchSizeIncrease(8, 2.0, step_size=3),
], ids=repr)
def test_config_round_trip_and_repr(schedule):
    clone = type(schedule).from_config(schedule.get_config())
    assert clone == schedule and clone is not schedule
    assert [clone(e) for e in range(10)] == [schedule(e) for e in range(10)]
    assert repr(schedule).startswith(type(schedule).__name__ + "(")
    assert copy.deepcopy(schedule) == schedule


# -- bad arguments --------------------------------------------------------------------
def _data():
    return D.ScheduledBatches(np.zeros((10, 2)), np.zeros(10), batch_size=4)


BAD = [
    ("initial_batch_size", lambda: S.BatchSizeDecay(0, 5)),
    ("decay_epochs", lambda: S.BatchSizeDecay(64, 0)),
    ("power", lambda: S.BatchSizeDecay(64, 5, power=0.0)),
    ("end_batch_size", lambda: S.BatchSizeDecay(64, 5, end_batch_size=65)),
    ("end_batch_size", lambda: S.BatchSizeDecay(64, 5, end_batch_size=-1)),
    ("factor", lambda: S.BatchSizeIncrease(32, factor=1.0, step_size=1)),
    ("step_size", lambda: S.BatchSizeIncrease(32, step_size=1, milestones=[2])),
    ("step_size", lambda: S.BatchSizeIncrease(32, step_size=0)),
    ("milestones", lambda: S.BatchSizeIncrease(32, milestones=[3, 2])),
    ("max_batch_size", lambda: S.BatchSizeIncrease(32, step_size=1, max_batch_size=16)),
    ("epoch", lambda: S.BatchSizeDecay(64, 5)(-1)),
    ("epoch", lambda: S.BatchSizeDecay(64, 5)(1.5)),
    ("batch_size", lambda: D.ScheduledBatches(np.zeros((4, 2)), batch_size=0)),
    ("shuffle", lambda: D.ScheduledBatches(np.zeros((4, 2)), shuffle="yes")),
    ("seed", lambda: D.ScheduledBatches(np.zeros((4, 2)), seed=-3)),
    ("x", lambda: D.ScheduledBatches(np.zeros((4, 2)), np.zeros(5))),
    ("sample_weight", lambda: D.ScheduledBatches(np.zeros((4, 2)), sample_weight=np.ones(4))),
    ("schedule", lambda: C.BatchSizeScheduler(32, _data())),
    ("data", lambda: C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), (np.zeros(3), np.zeros(3)))),
    ("min_batch_size", lambda: C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), _data(), min_batch_size=0)),
    ("max_batch_size", lambda: C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), _data(), min_batch_size=8,
                                                    max_batch_size=4)),
    ("lr_scaling", lambda: C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), _data(), lr_scaling="square")),
    ("base_batch_size", lambda: C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), _data(), base_batch_size=0)),
    ("verbose", lambda: C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), _data(), verbose=-1)),
]


@pytest.mark.parametrize("name,make", BAD, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BAD)])
def test_bad_arguments_raise_value_error_naming_the_argument(name, make):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_schedule_returning_nonsense_raises():
    sched = C.BatchSizeScheduler(lambda e: float("nan"), _data())
    with pytest.raises(ValueError, match="finite number"):
        sched.batch_size_at(0)


# -- the wrapper on its own ---------------------------------------------------------------
def test_each_epoch_is_a_partition_whatever_the_batch_size():
    ids = np.arange(N)
    data = D.ScheduledBatches({"a": ids, "b": ids * 2.0}, ids, ids % 3, batch_size=7, seed=3)
    orders = []
    for epoch, b in enumerate([7, 1, 103, 200, 10, 10]):
        data.configure(epoch, b)
        count = math.ceil(N / b)
        assert len(data) == count and data.batch_size == b
        assert list(range(data.num_batches)) == list(range(count))  # the live count
        batches = [data[i] for i in range(count)]
        seen = np.concatenate([x["a"] for x, _, _ in batches])
        assert sorted(seen.tolist()) == ids.tolist()  # every sample exactly once
        assert [len(y) for _, y, _ in batches] == [b] * (N // b) + ([N % b] if N % b else [])
        for x, y, w in batches:  # inputs, targets and weights stay aligned
            np.testing.assert_array_equal(x["b"], 2.0 * y)
            np.testing.assert_array_equal(w, y % 3)
        with pytest.raises(IndexError):
            data[count]
        orders.append(seen)
    # Reshuffled per epoch, reproducibly from the seed.
    assert not np.array_equal(orders[4], orders[5])
    again = D.ScheduledBatches({"a": ids, "b": ids * 2.0}, ids, ids % 3, batch_size=7, seed=3)
    again.configure(4, 10)
    np.testing.assert_array_equal(np.concatenate([again[i][0]["a"] for i in range(11)]), orders[4])


def test_live_count_behaves_like_an_int():
    data = D.ScheduledBatches(np.zeros((N, 1)), batch_size=10)
    count = data.num_batches
    assert count == 11 and 11 == count and count >= 11 and 10 < count and bool(count)
    assert int(count) == 11 and float(count) == 11.0 and f"{count:3d}" == " 11" and "%d" % count == "11"  # noqa: UP031 (Progbar)
    assert count - 1 == 10 and 22 - count == 11 and 5.5 / count == 0.5 and -(-count // 4) == 3
    data.configure(1, 50)
    assert count == 3 and list(range(count)) == [0, 1, 2] and repr(count) == "3"


def test_without_a_scheduler_it_reshuffles_each_epoch_at_a_fixed_size():
    data = D.ScheduledBatches(np.arange(10), batch_size=4, seed=0)
    epochs = []
    for _ in range(2):
        data.on_epoch_begin()
        epochs.append(np.concatenate([data[i][0] for i in range(len(data))]))
        data.on_epoch_end()
    assert len(data) == 3 and sorted(epochs[0]) == sorted(epochs[1]) == list(range(10))
    assert not np.array_equal(epochs[0], epochs[1])
    assert np.array_equal(np.concatenate([D.ScheduledBatches(np.arange(10), shuffle=False, batch_size=3)[i][0]
                                          for i in range(4)]), np.arange(10))


# -- the callback without fit() -----------------------------------------------------------
def test_clamps_and_learning_rate_factors():
    data = D.ScheduledBatches(np.zeros((N, 1)), batch_size=8)
    cb = C.BatchSizeScheduler(lambda e: [3, 8, 40, 1e6][e], data, min_batch_size=4, lr_scaling="sqrt")
    assert [cb.batch_size_at(e) for e in range(4)] == [4, 8, 40, N]  # max defaults to n
    assert [cb.learning_rate_factor_at(e) for e in range(4)] == pytest.approx(
        [1.0, math.sqrt(2), math.sqrt(10), math.sqrt(N / 4)])
    cb = C.BatchSizeScheduler(lambda e: 16 * 2**e, data, max_batch_size=64, lr_scaling="linear",
                              base_batch_size=32)
    assert [cb.learning_rate_factor_at(e) for e in range(4)] == [0.5, 1.0, 2.0, 2.0]


def compiled(optimizer):
    """A built model on `optimizer` (the scheduler's session needs a real model)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer, "mse")
    return model


def drive(cb, optimizer):
    """Starts `cb` on a model of `optimizer` outside fit() (hooks driven directly)."""
    model = compiled(optimizer)
    cb.set_model(model)
    cb.on_train_begin()
    return model


def test_coupling_multiplies_the_rate_by_the_epoch_factor():
    """The factor is a term of the rate the step computes, set absolutely from
    the epoch (never relative to a factor remembered somewhere), and nothing of
    it stays in the optimizer once training ends."""
    opt = keras.optimizers.SGD(0.1)
    data = D.ScheduledBatches(np.zeros((N, 1)), batch_size=8)
    cb = C.BatchSizeScheduler(S.BatchSizeIncrease(8, factor=2, step_size=1), data, lr_scaling="linear")
    drive(cb, opt)
    for epoch, expected in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (0, 0.1), (2, 0.4)]:
        cb.on_epoch_begin(epoch)
        assert float(opt.learning_rate) == pytest.approx(expected, rel=1e-6)
        assert data.batch_size == min(8 * 2**epoch, N)
    logs = {}
    cb.on_epoch_end(2, logs)
    assert logs == {"batch_size": 32}
    cb.on_train_end()
    assert isinstance(opt._learning_rate, keras.Variable)
    assert float(opt.learning_rate) == pytest.approx(0.1)
    # Another scheduler on the same optimizer applies its own epoch's factor.
    other = C.BatchSizeScheduler(S.BatchSizeIncrease(8, factor=2, step_size=1), data, lr_scaling="linear")
    drive(other, opt)
    other.on_epoch_begin(1)
    assert float(opt.learning_rate) == pytest.approx(0.2, rel=1e-6)
    other.on_train_end()


def test_smith_increase_decays_the_rate_past_its_cap_without_lr_scaling():
    opt = keras.optimizers.SGD(0.1)
    data = D.ScheduledBatches(np.zeros((1000, 1)), batch_size=10)
    cb = C.BatchSizeScheduler(S.BatchSizeIncrease(10, factor=5, step_size=1, max_batch_size=100), data)
    drive(cb, opt)
    rates = []
    for epoch in range(4):
        cb.on_epoch_begin(epoch)
        rates.append(float(opt.learning_rate))
    cb.on_train_end()
    assert [cb.batch_sizes[e] for e in range(4)] == [10, 50, 100, 100]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.1 * 100 / 250, 0.1 * 100 / 1250], rtol=1e-6)


def test_coupling_reaches_every_sub_optimizer_and_compiled_schedules():
    a, b = keras.optimizers.SGD(0.1), keras.optimizers.Adam(0.01)
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(a, {"x/.*": b}))
    data = D.ScheduledBatches(np.zeros((N, 1)), batch_size=8)
    cb = C.BatchSizeScheduler(lambda e: 8 * (e + 1), data, lr_scaling="linear")
    drive(cb, multi)
    cb.on_epoch_begin(2)
    assert float(a.learning_rate) == pytest.approx(0.3) and float(b.learning_rate) == pytest.approx(0.03)
    cb.on_train_end()
    # An optimizer compiled with a schedule: the factor multiplies the schedule.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    opt = keras.optimizers.SGD(schedule)
    drive(cb, opt)
    cb.on_epoch_begin(1)
    assert float(opt.learning_rate) == pytest.approx(0.2)
    cb.on_train_end()
    assert opt._learning_rate is schedule


def test_deepcopy_shares_the_data():
    data = _data()
    cb = C.BatchSizeScheduler(S.BatchSizeDecay(8, 2), data)
    cb.set_model(compiled(keras.optimizers.SGD()))
    clone = copy.deepcopy(cb)
    assert clone.data is data and clone.schedule == cb.schedule and clone.schedule is not cb.schedule
    assert clone.model is None


# -- fit(): exact accounting ---------------------------------------------------------------------
class Tally(keras.layers.Layer):
    """Counts, in the train step, each sample index and each batch size it sees."""

    def __init__(self, n, max_batch, **kwargs):
        super().__init__(**kwargs)
        self.n, self.max_batch = n, max_batch
        self.seen = self.add_weight(shape=(n,), initializer="zeros", trainable=False, name="seen")
        self.sizes = self.add_weight(shape=(max_batch + 1,), initializer="zeros", trainable=False,
                                     name="sizes")

    def call(self, inputs, training=False):
        if training:
            ids = ops.cast(inputs[:, 0], "int32")
            self.seen.assign_add(ops.sum(ops.one_hot(ids, self.n), axis=0))
            self.sizes.assign_add(ops.one_hot(ops.shape(inputs)[0], self.max_batch + 1))
        return inputs[:, 1:]


class Audit(keras.callbacks.Callback):
    """Checks each epoch: every sample once, batch sizes and update counts exact."""

    def __init__(self, tally, n):
        super().__init__()
        self.tally, self.n, self.rows = tally, n, []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = int(self.model.optimizer.iterations)

    def on_epoch_end(self, epoch, logs=None):
        b = logs["batch_size"]
        seen = ops.convert_to_numpy(self.tally.seen)
        sizes = ops.convert_to_numpy(self.tally.sizes)
        expected_sizes = np.zeros_like(sizes)
        expected_sizes[min(b, self.n)] += self.n // b
        if self.n % b:
            expected_sizes[self.n % b] += 1
        updates = int(self.model.optimizer.iterations) - self.start
        self.rows.append((b, updates, seen.tolist() == [1.0] * self.n,
                          np.array_equal(sizes, expected_sizes)))
        self.tally.seen.assign(np.zeros(self.n, "float32"))
        self.tally.sizes.assign(np.zeros_like(sizes))


def tally_model(n, max_batch, steps_per_execution=1):
    tally = Tally(n, max_batch)
    model = keras.Sequential([keras.Input((3,)), tally, keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(0.01), "mse", steps_per_execution=steps_per_execution)
    return model, tally


def arrays(n=N):
    rng = np.random.default_rng(0)
    x = np.concatenate([np.arange(n)[:, None], rng.normal(size=(n, 2))], axis=1).astype("float32")
    return x, x[:, 1:].sum(axis=1, keepdims=True)


def fit_and_audit(model, tally, data, scheduler, epochs, n=N, **kwargs):
    audit = Audit(tally, n)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(data, epochs=epochs, callbacks=[scheduler, audit], **kwargs)
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    return audit.rows, history


@pytest.mark.parametrize("schedule,kwargs,sizes,steps_per_execution", [
    (S.BatchSizeDecay(64, decay_epochs=3, power=2.0, end_batch_size=0), {"min_batch_size": 5},
     [64, 28, 7, 5], 1),
    (S.BatchSizeIncrease(10, factor=3, step_size=1), {"max_batch_size": 50}, [10, 30, 50, 50], 2),
], ids=["decay-min-clamp", "increase-max-clamp-spe2"])
def test_fit_sees_every_sample_once_per_epoch_with_exact_update_counts(schedule, kwargs, sizes,
                                                                      steps_per_execution):
    x, y = arrays()
    model, tally = tally_model(N, 64, steps_per_execution)
    data = D.ScheduledBatches(x, y, batch_size=99, seed=1)
    rows, history = fit_and_audit(model, tally, data, C.BatchSizeScheduler(schedule, data, **kwargs),
                                  epochs=4, verbose=0)
    assert [r[0] for r in rows] == sizes
    assert [r[1] for r in rows] == [math.ceil(N / b) for b in sizes]  # updates per epoch
    assert all(r[2] for r in rows), "a sample was dropped or repeated"
    assert all(r[3] for r in rows), "unexpected batch sizes"
    assert int(model.optimizer.iterations) == sum(math.ceil(N / b) for b in sizes)
    assert history.history["batch_size"] == sizes


def test_refuses_to_run_on_other_data_or_fixed_steps():
    x, y = arrays()
    model, _ = tally_model(N, 64)
    data = D.ScheduledBatches(x, y)
    sched = C.BatchSizeScheduler(S.BatchSizeDecay(32, 3), data)
    with pytest.raises(ValueError, match="ScheduledBatches"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[sched])
    with pytest.raises(ValueError, match="steps_per_epoch"):
        model.fit(data, epochs=1, steps_per_epoch=2, verbose=0, callbacks=[sched])


class UserDataset(keras.utils.PyDataset):
    """The usual PyDataset pattern: `batch_size` drives __len__ and __getitem__."""

    def __init__(self, x, y, batch_size):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size
        self.epoch_ends = 0

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        s = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[s], self.y[s]

    def on_epoch_end(self):
        self.epoch_ends += 1


def test_fit_over_a_user_py_dataset_with_progress_bar(capsys):
    x, y = arrays()
    model, tally = tally_model(N, 64)
    user = UserDataset(x, y, batch_size=16)
    data = D.ScheduledBatches(user)
    sched = C.BatchSizeScheduler(lambda e: [16, 40, 7][e], data)
    rows, _ = fit_and_audit(model, tally, data, sched, epochs=3, verbose=1)
    assert [r[:2] for r in rows] == [(16, 7), (40, 3), (7, 15)]
    assert all(r[2] and r[3] for r in rows)
    assert user.batch_size == 7 and user.epoch_ends >= 3
    out = capsys.readouterr().out
    for steps in ("7/7", "3/3", "15/15"):  # the progress bar follows each epoch's count
        assert steps in out


def test_keras_reads_a_py_dataset_length_once_per_fit():
    """Pins the Keras behaviour the live count works around: a plain __len__
    that shrinks between epochs runs out of data."""
    x, y = arrays()
    model, _ = tally_model(N, 64)
    user = UserDataset(x, y, batch_size=10)

    class Shrink(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            user.batch_size = [10, 50][epoch]

    with pytest.warns(UserWarning, match="ran out of data"):
        model.fit(user, epochs=2, verbose=0, callbacks=[Shrink()])


class Rates(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self.before, self.logged, self.epoch_rates = [], [], [], []

    def on_train_batch_begin(self, batch, logs=None):
        # The rate the optimizer is about to use for this update.
        self.before.append(int(self.model.optimizer.iterations))
        self.logged.append(float(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(int(self.model.optimizer.iterations))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_rates.append(float(self.model.optimizer.learning_rate))


@pytest.mark.parametrize("with_schedule,decay_first", [(False, False), (True, False), (True, True)],
                         ids=["float-rate", "scheduler-then-decay", "decay-then-scheduler"])
def test_lr_coupling_in_fit(with_schedule, decay_first):
    """sqrt coupling; under an LR callback the rate is schedule(t) * factor(epoch)."""
    x, y = arrays()
    model, _ = tally_model(N, 64)
    data = D.ScheduledBatches(x, y, seed=0)
    sched = C.BatchSizeScheduler(S.BatchSizeIncrease(8, factor=2, step_size=1), data,
                                 max_batch_size=40, lr_scaling="sqrt")
    rates = Rates()
    decay = [C.ExponentialDecay(decay_steps=10, decay_rate=0.5)] if with_schedule else []
    cbs = [*decay, sched, rates] if decay_first else [sched, *decay, rates]
    model.fit(data, epochs=4, verbose=0, callbacks=cbs)
    sizes = [8, 16, 32, 40]
    factors = np.sqrt(np.array(sizes) / 8.0)
    counts = [math.ceil(N / b) for b in sizes]
    assert rates.steps == list(range(1, sum(counts) + 1))
    if with_schedule:
        epoch_of_update = np.repeat(np.arange(4), counts)
        expected = S.ExponentialDecay(0.01, 10, 0.5)(np.array(rates.before)) * factors[epoch_of_update]
        np.testing.assert_allclose(rates.logged, expected, rtol=1e-6)
        # The optimizer's own variable is untouched; the factor stays with the optimizer.
        assert float(model.optimizer.learning_rate) == pytest.approx(0.01)
    else:
        np.testing.assert_allclose(rates.epoch_rates, 0.01 * factors, rtol=1e-6)


def test_example_runs_and_saves_its_plot(tmp_path):
    import os
    import runpy

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    main = runpy.run_path(os.path.join(root, "examples", "batch_size_schedule.py"))["main"]
    result = main(["--out", str(tmp_path), "--epochs", "4"])
    assert result["batch_sizes"] == [16, 32, 64, 64]
    assert result["updates"] == [85, 43, 22, 22]  # ceil(1347 / b)
    assert result["rates"] == pytest.approx([0.05, 0.05, 0.05, 0.025])  # halved past the cap
    assert result["accuracy"] > 0.85
    assert (tmp_path / "batch_size_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
