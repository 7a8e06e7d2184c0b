"""`mode="auto"` and `steps_per_execution="auto"` (`spec_impl.trainer.auto`): the run's first
real steps time each candidate setting, the rest of the run takes the fastest.

The choice rule is pinned on given costs (the calibration's clock replaced), the training it
does against `function` mode from the same weights on the same batches (every calibration step
is a real step, counted once), and the record of the choice (history, progress line,
TensorBoard text, the checkpoint folder's file, kept on resume) with the options a run combines
it with. No test asserts a time: which setting is fastest on this machine is the benchmarks'
business.
"""

import itertools
import json
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st

from spec_impl import train
from spec_impl.callbacks import CallRecorder
from spec_impl.testing import assert_allclose, digits_arrays, digits_mlp, read_scalars
from spec_impl.trainer import auto
from spec_impl.trainer.auto import (
    CHOICE_FILE,
    K_CANDIDATES,
    MORE_STEPS_GAIN,
    TIMED_STEPS,
    XLA_GIVE_UP,
    Calibration,
)
from spec_impl.trainer.engine import Trainer

# float32 sums in the order XLA fuses them (the calibration may run XLA steps): a few ulp
# after a few hundred SGD steps, as in tests/test_xla_loop.py.
ATOL = 1e-5
BATCH = 8


def simulate(calibration, cost, first_call=None):
    """Drive `calibration` to its choice with `cost[(mode, k)]` seconds per step, one full call
    at a time (a setting's first call `first_call[(mode, k)]` seconds where given); returns the
    settings in the order they ran."""
    ran = []
    first_call = first_call or {}
    while not calibration.done:
        setting = calibration.current
        seconds = cost[setting] * setting[1]
        if setting not in ran:
            seconds = first_call.get(setting, seconds)
        ran.append(setting)
        calibration.record(setting, seconds, setting[1])
    return ran


# ---- the rule, on given costs ----

def test_the_candidates_run_cheapest_first_and_the_fastest_is_kept():
    cost = {("function", 1): 3.0, ("xla", 1): 9.0, ("function", 8): 2.0, ("xla", 8): 1.0,
            ("function", 32): 2.0, ("xla", 32): 1.5}
    calibration = Calibration(("function", "xla"), K_CANDIDATES)
    ran = simulate(calibration, cost)
    # k = 1: each mode 1 untimed + 8 timed calls (XLA 3x slower there, but not judged at k = 1);
    # k = 8: 1 + 1 calls each; k = 32 (k = 8 gained 3x): 1 + 1 each; k = 32 gains nothing on
    # k = 8, so the search stops.
    assert ran == [("function", 1)] * 9 + [("xla", 1)] * 9 + [("function", 8)] * 2 \
        + [("xla", 8)] * 2 + [("function", 32)] * 2 + [("xla", 32)] * 2
    assert calibration.choice == ("xla", 8)
    assert calibration.steps == 18 + 4 * 8 + 4 * 32
    report = calibration.report()
    assert report["ms_per_step"] == {"function_k1": 3000.0, "xla_k1": 9000.0,
                                     "function_k8": 2000.0, "xla_k8": 1000.0,
                                     "function_k32": 2000.0, "xla_k32": 1500.0}
    assert (report["mode"], report["steps_per_execution"], report["source"]) == \
        ("xla", 8, "calibration")
    assert report["not_tried"] == {}


def test_xla_is_dropped_where_it_is_much_slower_and_k_stops_growing_without_gain():
    # XLA at k = 8 is XLA_GIVE_UP x function and a bit: not tried at k = 32; k = 8 gains
    # nothing on k = 1: k = 32 is not tried at all.
    cost = {("function", 1): 1.0, ("xla", 1): 1.0, ("function", 8): 1.0,
            ("xla", 8): 1.0 * XLA_GIVE_UP * 1.01}
    calibration = Calibration(("function", "xla"), K_CANDIDATES)
    ran = simulate(calibration, cost)
    assert set(ran) == set(cost)
    assert calibration.choice == ("function", 1)  # ties go to the first (cheapest) setting
    assert "xla" not in calibration._live


def test_an_xla_group_too_costly_to_compile_for_the_run_left_is_not_tried():
    cost = {("function", 1): 1.0, ("xla", 1): 0.9, ("function", 8): 0.8, ("xla", 8): 0.5,
            ("function", 32): 0.7, ("xla", 32): 0.4}
    first_call = {("xla", 1): 20.0, ("xla", 8): 160.0}  # 20 s a step to compile
    # 982 steps left at 0.9 s (the fastest so far): 88 s may go to compilation. XLA at k = 8,
    # predicted 8 x 20 s, would cost 160 - 8 x 0.9 = 153 s: not tried; nor at k = 32.
    short = Calibration(("function", "xla"), K_CANDIDATES, total_steps=1000)
    ran = simulate(short, cost, first_call)
    assert ("xla", 8) not in ran and ("xla", 32) not in ran
    assert short.choice == ("function", 32)
    assert short.not_tried == {("xla", 8): 160.0, ("xla", 32): 640.0}
    assert short.report()["not_tried"]["xla_k8"] == (
        "its first call, about 160 s, would cost more than 10% of the run left")
    # the engine's group compiles at most 8 steps (XLA_UNROLL): k = 32 costs what k = 8 does
    capped = Calibration(("function", "xla"), K_CANDIDATES, total_steps=1000, unroll=8)
    simulate(capped, cost, first_call)
    assert capped.not_tried == {("xla", 8): 160.0, ("xla", 32): 160.0}
    # 100,000 steps left: worth it; and with a run of unknown length, everything is tried
    for total in (100_000, None):
        long = Calibration(("function", "xla"), K_CANDIDATES, total_steps=total)
        simulate(long, cost, first_call)
        assert long.choice == ("xla", 32) and long.not_tried == {}


def test_a_short_run_compiles_no_xla_when_tracing_alone_costs_more_than_it_could_save():
    cost = {("function", 1): 1.0, ("xla", 1): 0.5, ("function", 8): 0.9, ("xla", 8): 0.4}
    first_call = {("function", 1): 30.0}  # tracing a large step
    # 100 steps at 1 s: 9 s may go to compilation; XLA's first call traces the step too (30 s
    # or more), and 8 unrolled steps 8 times that
    calibration = Calibration(("function", "xla"), (1, 8), total_steps=100)
    ran = simulate(calibration, cost, first_call)
    assert set(ran) == {("function", 1), ("function", 8)}
    assert calibration.not_tried == {("xla", 1): 30.0, ("xla", 8): 240.0}
    assert calibration.choice == ("function", 8)


def test_xla_at_one_step_per_call_is_judged_where_k_is_fixed_at_one():
    calibration = Calibration(("function", "xla"), (1,))
    ran = simulate(calibration, {("function", 1): 2.0, ("xla", 1): 1.0})
    assert ran == [("function", 1)] * 9 + [("xla", 1)] * 9
    assert calibration.choice == ("xla", 1)


def test_steps_per_call_beyond_the_epoch_are_not_candidates():
    assert Calibration(("function",), K_CANDIDATES, steps_per_epoch=20).ks == [1, 8]
    assert Calibration(("function",), K_CANDIDATES, steps_per_epoch=5).ks == [1]
    assert Calibration(("function",), (16,), steps_per_epoch=5).ks == [16]  # the one asked


def test_a_partial_call_counts_its_steps_but_is_not_timed():
    calibration = Calibration(("function",), (1, 8))
    simulate_until = [("function", 1)] * 9
    for setting in simulate_until:
        calibration.record(setting, 1.0, 1)
    calibration.record(("function", 8), 3.0, 5)  # the epoch's end: 5 of 8 steps
    assert calibration.steps == 14
    assert ("function", 8) not in calibration.first_call
    assert calibration.current == ("function", 8)


def test_a_run_too_short_to_calibrate_takes_the_first_candidate_or_the_fastest_timed():
    calibration = Calibration(("function", "xla"), K_CANDIDATES)
    assert calibration.finish() == ("function", 1)  # nothing timed
    calibration = Calibration(("function", "xla"), (1,))
    calibration.record(("function", 1), 1.0, 1)  # untimed first call
    calibration.record(("function", 1), 0.5, 1)
    assert calibration.finish() == ("function", 1)
    assert calibration.report()["ms_per_step"] == {"function_k1": 500.0}


@given(st.dictionaries(st.sampled_from([(m, k) for m in ("function", "xla") for k in K_CANDIDATES]),
                       st.floats(1e-4, 1.0), min_size=6, max_size=6))
def test_the_choice_is_the_fastest_setting_timed(cost):
    calibration = Calibration(("function", "xla"), K_CANDIDATES)
    simulate(calibration, cost)
    timed = {s: calibration.per_step(s) for s in calibration.seconds}
    assert calibration.choice == min(timed, key=timed.get)
    assert all(len(calibration.seconds[s]) * s[1] >= TIMED_STEPS for s in timed)
    assert set(calibration.first_call) == set(timed)  # each had its untimed first call
    ks = sorted({k for _, k in timed})
    assert ks == list(K_CANDIDATES[:len(ks)])  # no k skipped
    for smaller, larger in itertools.pairwise(ks):  # a larger k only after a gain
        best = min(t for (_, k), t in timed.items() if k == smaller)
        before = [t for (_, k), t in timed.items() if k < smaller]
        assert not before or best <= MORE_STEPS_GAIN * min(before)
        assert larger > smaller


def test_the_choice_file_round_trips_and_a_foreign_or_broken_one_is_ignored(tmp_path):
    calibration = Calibration(("function", "xla"), (1,))
    simulate(calibration, {("function", 1): 2.0, ("xla", 1): 1.0})
    calibration.save(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [CHOICE_FILE]  # no temporary file left
    again = Calibration(("function", "xla"), (1,))
    assert again.restore(tmp_path) and again.choice == ("xla", 1)
    assert again.report()["ms_per_step"] == {"function_k1": 2000.0, "xla_k1": 1000.0}
    assert again.report()["source"] == f"the checkpoint folder's {CHOICE_FILE}"
    assert not Calibration(("function",), (1, 8)).restore(tmp_path)  # not a candidate here
    (tmp_path / CHOICE_FILE).write_text("{not json")
    assert not Calibration(("function", "xla"), (1,)).restore(tmp_path)
    assert not Calibration(("function", "xla"), (1,)).restore(tmp_path / "missing")


def test_bad_values_name_auto():
    x, y, _, _ = digits_arrays(16)
    with pytest.raises(ValueError, match=r"one of eager, function, xla, auto. Received: mode='fast'"):
        Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", mode="fast")
    with pytest.raises(ValueError, match=r"positive integer for `steps_per_execution`. "
                                         r"Received: steps_per_execution='fast'"):
        Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", steps_per_execution="fast")


def test_one_setting_needs_no_calibration():
    trainer = Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", mode="xla",
                      steps_per_execution=8)
    assert trainer.calibration(100) is None
    assert (trainer.mode, trainer.steps_per_execution) == ("xla", 8)


# ---- the run: real steps, switched, against function mode ----

def run(n, mode, k, epochs, **kwargs):
    x, y, x_val, y_val = digits_arrays(n)
    model = digits_mlp()
    kwargs.setdefault("verbose", 0)
    history = train(model, x, y, batch_size=BATCH, epochs=epochs, shuffle=False,
                    loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(0.05),
                    metrics=["accuracy"], validation_data=(x_val, y_val), mode=mode,
                    steps_per_execution=k, **kwargs)
    return model, history


# Seconds per step the calibration records instead of the clock's: XLA at k = 8 is the fastest,
# so a run switches between the settings before it and ends there.
SWITCHING_COSTS = {("function", 1): 3.0, ("xla", 1): 5.0, ("function", 8): 2.0, ("xla", 8): 1.0,
                   ("function", 32): 2.0, ("xla", 32): 1.5}


def _clock_by_costs(monkeypatch):
    record = Calibration.record
    monkeypatch.setattr(Calibration, "record",
                        lambda self, setting, seconds, steps: record(
                            self, setting, SWITCHING_COSTS[setting] * steps, steps))


def test_a_switching_calibration_trains_as_function_mode(monkeypatch, tmp_path):
    """The calibration's clock is replaced by costs that make `xla_k8` the fastest, so the run
    really switches between five settings (the XLA group among them) and ends in XLA: one
    TensorBoard point per step and the weights of function mode throughout."""
    _clock_by_costs(monkeypatch)
    recorder = CallRecorder()
    model, history = run(1024, "auto", "auto", 3, log_dir=str(tmp_path / "logs"),
                         callbacks=[recorder])
    reference, ref_history = run(1024, "function", 1, 3)
    execution = history.params["execution"]
    assert (execution["mode"], execution["steps_per_execution"]) == ("xla", 8)
    # 128 steps an epoch: function_k1 steps 1-9, xla_k1 10-18, function_k8 19-34, xla_k8 35-50,
    # function_k32 51-114, xla_k32's call at 115 runs the 14 steps left (not timed), epoch 2
    # times it whole
    assert execution["calibration_steps"] == 128 + 64
    for name, values in ref_history.history.items():
        assert_allclose(history.history[name], values, atol=ATOL, err_msg=name)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)
    points = read_scalars(tmp_path / "logs" / "train")["batch_loss"]
    assert [s for s, _ in points] == list(range(1, 3 * 128 + 1))
    # batch callbacks once per call: k = 1, then 8 and 32 while calibrating, then 8
    ends = [c[1] for c in recorder.calls if c[0] == "end"]
    assert ends[:18] == list(range(18)) and ends[18:22] == [25, 33, 41, 49]
    assert ends[22:24] == [81, 113] and ends[-2:] == [119, 127]


def test_auto_with_logs_checkpoints_and_a_resume(tmp_path, capsys):
    """Timed on this machine's clock: whatever it picks, the run equals function mode; the
    choice is printed, written to TensorBoard and the checkpoint folder, and a resumed run
    keeps it without calibrating again."""
    ckpt = tmp_path / "ckpt"
    model, history = run(320, "auto", "auto", 2, log_dir=str(tmp_path / "logs"),
                         checkpoint_dir=str(ckpt), verbose=1)
    execution = history.params["execution"]
    assert execution["mode"] in auto.AUTO_MODES and execution["steps_per_execution"] in K_CANDIDATES
    assert execution["source"] == "calibration" and execution["calibration_steps"] > 0
    chosen = (execution["mode"], execution["steps_per_execution"])
    timed = execution["ms_per_step"]
    assert min(timed, key=timed.get) == f"{chosen[0]}_k{chosen[1]}"
    assert f"auto: {chosen[0]}, {chosen[1]} step(s) per call, chosen on" in capsys.readouterr().out
    saved = json.loads((ckpt / CHOICE_FILE).read_text())
    assert (saved["mode"], saved["steps_per_execution"]) == chosen
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs" / "train"), size_guidance={"tensors": 0})
    events.Reload()
    (event,) = events.Tensors("execution")
    text = tf.make_ndarray(event.tensor_proto).item().decode()
    assert text.startswith(f"**{chosen[0]}, {chosen[1]} step(s) per call** (calibration, ")
    assert f"| {chosen[0]}_k{chosen[1]} |" in text

    resumed_model, resumed = run(320, "auto", "auto", 4, checkpoint_dir=str(ckpt))
    kept = resumed.params["execution"]
    assert (kept["mode"], kept["steps_per_execution"]) == chosen
    assert kept["source"] == f"the checkpoint folder's {CHOICE_FILE}" and kept["calibration_steps"] == 0
    reference, _ = run(320, "function", 1, 4)
    for got, want in zip(resumed_model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)


def test_auto_with_on_nan_skip_leaves_out_the_same_steps_as_function_mode(monkeypatch):
    """A NaN input at step 30 falls inside the calibration (the clock replaced so that it
    switches between settings): the step is skipped as in function mode."""
    _clock_by_costs(monkeypatch)
    x, y, _, _ = digits_arrays(1024)
    x = x.copy()
    x[29 * BATCH] = np.nan  # step 30 of 128 in each epoch

    def fitted(mode, k):
        model = digits_mlp()
        with pytest.warns(RuntimeWarning, match="Skipped 1 step"):
            history = train(model, x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                            loss="sparse_categorical_crossentropy",
                            optimizer=keras.optimizers.SGD(0.05), mode=mode,
                            steps_per_execution=k, on_nan="skip")
        return history, model

    history, model = fitted("auto", "auto")
    ref_history, reference = fitted("function", 1)
    assert history.params["execution"]["mode"] == "xla"  # the costs above: xla, k = 8
    assert_allclose(history.history["loss"], ref_history.history["loss"], atol=ATOL)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)


def test_a_run_shorter_than_the_calibration_records_what_it_timed():
    model, history = run(24, "auto", "auto", 1)  # 3 steps: k = 8 and 32 cannot fit an epoch
    execution = history.params["execution"]
    assert execution["calibration_steps"] == 3
    assert (execution["mode"], execution["steps_per_execution"]) == ("function", 1)
    assert list(execution["ms_per_step"]) == ["function_k1"]  # 1 untimed + 2 timed calls
    reference, _ = run(24, "function", 1, 1)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_xla_asked_for_a_convolutional_model_on_a_cpu_says_what_it_cost():
    def cnn():
        return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3),
                                 keras.layers.Flatten(), keras.layers.Dense(10)])

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present: XLA's CPU kernels are not what would run")
    with pytest.warns(UserWarning, match=r"mode='xla' on a CPU: in spec-impl bench, XLA ran the "
                                         r"sequential CNN's steps 1.7x slower .* Sequential has "
                                         r"1 convolution layer\(s\). mode='auto' times both"):
        Trainer(cnn(), loss="mse", mode="xla")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Trainer(cnn(), loss="mse", mode="auto")  # auto measures instead
        Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", mode="xla")  # no convolution
