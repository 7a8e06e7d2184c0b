"""The benchmark machinery: workloads (the registry's and a user's own), FLOP counting, ratios
with intervals and verdicts, tables and the chart (timing itself lives in benchmarks/)."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from spec_impl.bench import (
    WORKLOADS,
    BenchSettings,
    WorkloadSpec,
    build_workload,
    interleaved,
    make_trainer,
    step_flops,
    suite,
    tracing_count,
)
from spec_impl.bench.plot import plot, speedups
from spec_impl.bench.report import format_recommendation, format_tables
from spec_impl.bench.settings import BF16_FLAGS, comparisons, quick_skips, runner_names
from spec_impl.bench.stats import compare, format_ratio, ratio_interval, verdict
from spec_impl.bench.suite import auto_choice, recommend

MLP_MATMUL_FLOPS = 2 * 32 * (784 * 512 + 512 * 10) * 2 + 2 * 32 * 512 * 10  # fwd + dW + one dX


def test_mlp_step_flops_from_the_graph_match_the_matmuls():
    workload = build_workload("mnist_mlp")
    flops = step_flops(make_trainer(workload, "function"), workload)
    # The profiler counts every op; the three matmul groups dominate (elementwise ops < 10%).
    assert MLP_MATMUL_FLOPS <= flops < 1.1 * MLP_MATMUL_FLOPS


@pytest.mark.parametrize("name", ["residual_regressor", "ticket_classifier"])
def test_workload_steps_without_retracing(name):
    workload = build_workload(name)
    trainer = make_trainer(workload, "function")
    before = [w.copy() for w in workload.model.get_weights()]
    for _ in range(3):
        trainer.compiled_train_step((workload.x, workload.y))
    assert tracing_count(trainer) == 1 and int(trainer.optimizer.iterations) == 3
    assert all((a != b).any() for a, b in zip(before, workload.model.get_weights(), strict=True))
    assert sum(1 for _ in workload.dataset(2)) == 2


def test_unknown_workload():
    with pytest.raises(ValueError, match=r"Unknown workload 'resnet'. Expected one of "
                                         + ", ".join(WORKLOADS)):
        build_workload("resnet")


# ---- ratios: a value, a 95 % interval over the rounds, a verdict ----

def test_a_clear_speed_up_is_faster_and_its_inverse_slower():
    rng = np.random.default_rng(0)
    slow = 2.0 + 0.05 * rng.random(9)
    fast = 1.0 + 0.05 * rng.random(9)
    value, low, high = ratio_interval(fast, slow)
    assert value == pytest.approx(np.median(fast / slow))  # the median of the paired ratios
    assert low < value < high < 1 and verdict(low, high) == "faster"
    assert verdict(*ratio_interval(slow, fast)[1:]) == "slower"


def test_ratios_inside_the_noise_are_no_difference():
    # the same runner timed twice: rounds that scatter by +-20 % around one time
    rng = np.random.default_rng(1)
    a, b = 1 + 0.2 * rng.standard_normal(9), 1 + 0.2 * rng.standard_normal(9)
    value, low, high = ratio_interval(a, b)
    assert low < 1 < high and verdict(low, high) == "no difference"


def test_the_record_is_complete_and_too_few_rounds_give_no_verdict():
    times = {"loop_k8": [1.0, 1.1, 0.9, 1.05, 1.0, 0.95], "fit_k8": [1.2, 1.3, 1.1, 1.25, 1.2, 1.2]}
    record = compare("mnist_mlp", "loop_k8", "fit_k8", times)
    assert set(record) == {"name", "workload", "value", "low", "high", "verdict", "rounds"}
    assert record["name"] == "loop_k8 / fit_k8" and record["workload"] == "mnist_mlp"
    assert (record["low"], record["high"], record["verdict"]) == (
        min(np.divide(times["loop_k8"], times["fit_k8"])),
        max(np.divide(times["loop_k8"], times["fit_k8"])), "faster")  # 6 rounds: [min, max]
    five = {name: t[:5] for name, t in times.items()}
    short = compare("mnist_mlp", "loop_k8", "fit_k8", five)
    assert (short["low"], short["high"], short["verdict"], short["rounds"]) == (None, None, None, 5)
    assert format_ratio(short) == f"{short['value']:.2f} (5 rounds: no verdict under 6)"
    assert format_ratio({"value": 0.97, "low": 0.91, "high": 1.03,
                         "verdict": "no difference"}) == "0.97 [0.91, 1.03] no difference"


def test_unequal_round_counts_are_refused():
    with pytest.raises(ValueError, match="equal, non-empty lists of round times. Received: 3 and 2"):
        ratio_interval([1, 2, 3], [1, 2])


def test_settings_levels_and_the_fair_comparisons():
    assert BenchSettings("smoke").rounds("mini_inception") == 2
    assert BenchSettings("smoke").steps("mnist_mlp", 32) == 32  # a multiple of k
    with pytest.raises(ValueError, match="level among full, quick, smoke. Received: level='fast'"):
        BenchSettings("fast")
    names = runner_names("residual_regressor")
    assert {"xla_loop_k8", "xla_loop_k32", "fit_xla_k32", "fit_k32", "loop_k32"} <= set(names)
    pairs = comparisons("residual_regressor")
    assert ("xla_loop_k32", "fit_k32") in pairs and ("xla_loop_k32", "fit_xla_k32") in pairs
    # a workload whose step takes about a second stops at k = 8
    assert "loop_k32" not in runner_names("mini_inception")
    assert ("xla_loop_k8", "fit_k8") in comparisons("mini_inception")
    assert "fit_xla_k8" not in runner_names("mini_inception")  # 38 s to compile, here
    # --quick stops every workload at k = 8 and leaves out fit's XLA and the slow workloads;
    # smoke runs k = 2 (a cheap XLA group), no k = 8
    assert runner_names("residual_regressor", "quick") == [
        "eager", "function", "xla", "loop_k1", "fit_k1", "loop_k8", "fit_k8", "xla_loop_k8"]
    assert ("xla_loop_k8", "loop_k8") in comparisons("residual_regressor", "quick")
    assert not any("fit_xla" in a + b for a, b in comparisons("residual_regressor", "quick"))
    assert quick_skips("mini_inception", "quick") and not quick_skips("mini_inception", "full")
    assert not quick_skips("mnist_mlp", "quick")
    assert runner_names("residual_regressor", "smoke")[-3:] == ["fit_k2", "xla_loop_k2", "fit_xla_k2"]
    assert runner_names("mini_inception", "smoke")[-3:] == ["loop_k2", "fit_k2", "xla_loop_k2"]


def test_rounds_stop_when_the_budget_is_spent_never_under_the_minimum():
    calls = []
    runners = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    times = interleaved(runners, rounds=9, warmup=1, budget=0.0, min_rounds=3)
    assert [len(t) for t in times.values()] == [3, 3]  # the budget spent at once: the minimum
    assert calls == ["a", "b"] * 4  # one untimed call each, then 3 rounds in alternation
    assert [len(t) for t in interleaved(runners, rounds=5).values()] == [5, 5]  # no budget
    assert BenchSettings("smoke").budget is None and BenchSettings("quick").budget > 0


def test_the_recommendation_is_the_fastest_train_setting_against_fit_k1():
    rounds = {"function": [1.0] * 6, "fit_k1": [4.0, 4.1, 3.9, 4.0, 4.2, 4.0], "loop_k1": [3.0] * 6,
              "loop_k8": [2.0, 2.1, 1.9, 2.0, 2.0, 2.0], "xla_loop_k8": [1.0, 1.1, 0.9, 1.0, 1.0, 1.0],
              "fit_xla_k8": [0.5] * 6}  # fit's own XLA: not a train setting
    best = recommend("w", rounds)
    assert (best["runner"], best["mode"], best["steps_per_execution"]) == ("xla_loop_k8", "xla", 8)
    assert best["call"] == "train(model, ..., mode='xla', steps_per_execution=8)"
    assert best["vs_fit_k1"]["name"] == "xla_loop_k8 / fit_k1"
    assert best["vs_fit_k1"]["value"] == pytest.approx(1.0 / 4.0)
    assert best["vs_fit_k1"]["verdict"] == "faster" and best["ms_per_step"] == pytest.approx(1e3)
    first_calls = {"loop_k1": 1.0, "xla": 2.0, "xla_loop_k8": 3.0}
    rounds["xla"] = [3.0] * 6  # one XLA step per call: slow (a launch per step)
    best["auto"] = auto_choice(rounds, first_calls)
    # auto's rule on these times: function and XLA at k = 1, both at k = 8 (XLA at k = 1 is
    # not judged), no k = 32 measured: the XLA group, the fastest
    assert best["auto"] == {"runner": "xla_loop_k8", "mode": "xla", "steps_per_execution": 8,
                            "vs_fastest": 1.0}
    lines = format_recommendation(best)
    assert lines[2].endswith("xla, k = 8 (row xla_loop_k8), 1.00x the fastest's time")
    assert lines[0] == "w: train(model, ..., mode='xla', steps_per_execution=8)"
    assert "xla_loop_k8 / fit_k1 0.25 [" in lines[1] and "(4.00x fit's speed)" in lines[1]


def test_mixed_bfloat16_is_timed_for_every_model_only_with_bfloat16_instructions(monkeypatch):
    measured = []

    def fake(spec, policy, settings, peak):
        measured.append((spec.name, policy, spec.batch_size))
        ratio = {"name": f"{policy} / float32", "workload": f"{spec.name}:precision",
                 "value": 0.5, "low": 0.4, "high": 0.6, "verdict": "faster"}
        return [], [ratio]

    monkeypatch.setattr(suite, "measure_precision", fake)
    specs = [WorkloadSpec("mnist_mlp"), WorkloadSpec("mini_inception", 16),
             WorkloadSpec("saved.keras")]
    flags = dict.fromkeys(BF16_FLAGS, False)
    results = {"machine": flags, "ratios": [], "recommendations": [{"workload": "mnist_mlp"}]}
    suite._precision(results, specs, BenchSettings("smoke"), "cpu", {}, lambda _: None)
    assert not measured and "precision" not in results
    assert results["precision_skipped"].startswith("this CPU has no bfloat16 instructions "
                                                   "(avx512_bf16, amx_bf16 absent)")
    text = format_tables({**results, "machine": _MACHINE, "train_steps": [], "seconds": 1.0,
                          "recommendations": []})
    assert "Mixed precision: this CPU has no bfloat16 instructions" in text
    results = {"machine": {**flags, "amx_bf16": True}, "ratios": [],
               "recommendations": [{"workload": "mnist_mlp"}]}
    suite._precision(results, specs, BenchSettings("smoke"), "cpu", {}, lambda _: None)
    # every model but the .keras file (which keeps its own policy), at its own batch size
    assert measured == [("mnist_mlp", "mixed_bfloat16", None), ("mini_inception", "mixed_bfloat16", 16)]
    assert results["recommendations"][0]["precision"]["policy"] == "mixed_bfloat16"


_MACHINE = {"cpu": "Test CPU", "cores": 2, "tensorflow": "2.x", "keras": "3.x", "device": "cpu",
            "date": "2026-11-23"}


def _row(name, mode, ms):
    return {"workload": name, "mode": mode, "batch_size": 32, "ms_per_step": ms,
            "samples_per_s": 32e3 / ms, "flops_per_step": 10**9, "gflops": 1e6 / ms,
            "pct_of_peak": 1e6 / ms, "first_call_s": None, "compute_dtype": "float32"}


def test_tables_print_each_ratio_with_its_interval_and_the_chart_is_relative_to_fit(tmp_path):
    ratio = {"name": "loop_k8 / fit_k8", "workload": "w", "value": 0.8, "low": 0.7, "high": 0.9,
             "verdict": "faster"}
    results = {
        "machine": {"cpu": "Test CPU", "cores": 2, "tensorflow": "2.x", "keras": "3.x",
                    "device": "cpu", "date": "2026-11-23",
                    "peak": {"cores": 2, "clock_ghz": 3.125, "clock_source": "cpu MHz",
                             "flops_per_cycle": {"float32": 16, "bfloat16": 40},
                             "units": {"float32": "AVX", "bfloat16": "X"},
                             "gflops": {"float32": 100.0, "bfloat16": 250.0}}},
        "peak_gflops": {"float32": 100.0, "bfloat16": 250.0},
        "best_matmul": {"float32": {"gflops": 80.0, "by": "numpy n=1024"}},
        "train_steps": [_row("w", "eager", 40.0), _row("w", "function", 4.0),
                        _row("w", "fit_k1", 5.0), _row("w", "loop_k8", 2.0),
                        _row("w", "fit_k8", 2.5)],
        "ratios": [ratio],
        "seconds": 1.0,
    }
    text = format_tables(results)
    assert "loop_k8 / fit_k8  0.80 [0.70, 0.90] faster" in text
    assert ("Peak: float32 100.0 GFLOP/s (2 cores x 3.12 GHz x 16 FLOPs/cycle, AVX); bfloat16 "
            "250.0 GFLOP/s (2 cores x 3.12 GHz x 40 FLOPs/cycle, X); clock from cpu MHz; best "
            "matmul float32 80.0 (numpy n=1024) GFLOP/s") in text and "Test CPU" in text
    assert speedups(results)["w"] == {"eager": 5.0 / 40.0, "function": 5.0 / 4.0, "fit_k1": 1.0,
                                      "loop_k8": 5.0 / 2.0, "fit_k8": 2.0}
    path = plot(results, str(tmp_path / "speedup.png"))
    assert (tmp_path / "speedup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path


# ---- a user's own model ----

USER_MODULE = textwrap.dedent("""
    import keras

    def make():
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                 keras.layers.Dense(3, activation="softmax")])

    def subclassed():
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        return Net()
""")


def _bench(args, tmp_path):
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    env = {"PYTHONPATH": str(tmp_path)}
    return subprocess.run([sys.executable, "-m", "spec_impl", "bench", "--smoke", *args],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, **env})


@pytest.mark.slow
def test_bench_times_a_model_from_a_temporary_module(tmp_path):
    out = tmp_path / "bench.json"
    proc = _bench(["--model", "my_models:make", "--loss", "sparse_categorical_crossentropy",
                   "--batch-size", "16", "--json", str(out), "--plot", str(tmp_path / "s.png")],
                  tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {r["workload"] for r in results["train_steps"]} == {"my_models:make"}
    assert [r["mode"] for r in results["train_steps"]] == runner_names("my_models:make", "smoke")
    assert all(r["batch_size"] == 16 for r in results["train_steps"])
    assert [r["name"] for r in results["ratios"]] == [
        f"{a} / {b}" for a, b in comparisons("my_models:make", "smoke")]
    assert {r["verdict"] for r in results["ratios"]} == {None}  # --smoke: 2 rounds, no verdict
    assert "eval_loop" not in results  # only the chosen model is timed
    assert "xla_loop_k2 / fit_xla_k2" in proc.stdout
    # the recommendation: the fastest train setting, against fit_k1, with the call
    (best,) = results["recommendations"]
    assert best["workload"] == "my_models:make" and best["call"] in proc.stdout
    assert f"{best['runner']} / fit_k1" in proc.stdout


def test_a_user_model_needs_a_loss_and_an_input_shape(tmp_path):
    proc = _bench(["--model", "my_models:make"], tmp_path)
    assert proc.returncode == 2
    assert "not compiled with a loss; pass --loss" in proc.stderr
    proc = _bench(["--model", "my_models:subclassed", "--loss", "mse"], tmp_path)
    assert proc.returncode == 2 and "pass --input-shape" in proc.stderr
    proc = _bench(["--model", "my_models:missing", "--loss", "mse"], tmp_path)
    assert proc.returncode == 2 and "cannot import missing from my_models" in proc.stderr
    proc = _bench(["--model", "absent.keras"], tmp_path)
    assert proc.returncode == 2 and "--model absent.keras: no such file" in proc.stderr


def test_labels_fit_the_loss():
    spec = WorkloadSpec("residual_regressor")
    workload = spec.build()
    assert workload.y.dtype == tf.float32  # a regression: normal targets
    classifier = build_workload("mnist_mlp")
    assert classifier.y.dtype == tf.int64 and int(tf.reduce_max(classifier.y)) < 10


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is present")
def test_bench_on_gpu_without_one_exits_non_zero():
    proc = subprocess.run([sys.executable, "-m", "spec_impl", "bench", "--device", "gpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sees no GPU" in proc.stderr
