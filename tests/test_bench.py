"""The benchmark machinery: workloads, FLOP counting, tables (timing itself lives in benchmarks/)."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from spec_impl.bench import WORKLOADS, build_workload, make_trainer, step_flops, tracing_count
from spec_impl.bench_suite import format_tables, plot

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
    losses = [float(trainer.train_step((workload.x, workload.y))) for _ in range(3)]
    assert tracing_count(trainer) == 1
    assert all(np.isfinite(losses))
    dataset = workload.dataset(2)
    assert sum(1 for _ in dataset) == 2


def test_unknown_workload():
    with pytest.raises(ValueError, match=r"Unknown workload 'resnet'. Expected one of "
                                         + ", ".join(WORKLOADS)):
        build_workload("resnet")


def _row(name, mode, ms):
    return {"workload": name, "mode": mode, "batch_size": 32, "ms_per_step": ms,
            "samples_per_s": 32e3 / ms, "flops_per_step": 10**9, "gflops": 1e6 / ms,
            "pct_of_peak": 1e6 / ms, "first_call_s": None}


def test_tables_and_plot_show_ratios(tmp_path):
    results = {
        "machine": {"cpu": "Test CPU", "cores": 2, "tensorflow": "2.x", "keras": "3.x",
                    "device": "cpu"},
        "peak_gflops": 100.0,
        "train_steps": [_row("w", "eager", 40.0), _row("w", "function", 4.0),
                        _row("w", "xla", 8.0), _row("w", "loop_k1", 4.5), _row("w", "fit_k1", 5.0),
                        _row("w", "loop_k8", 2.0), _row("w", "fit_k8", 2.5),
                        _row("w", "loop_k32", 1.5), _row("w", "fit_k32", 1.5),
                        _row("mini_inception", "function", 100.0),
                        _row("mini_inception_mixed_bfloat16", "function", 80.0)],
        "eval_loop": {"eager": 2.0, "function": 0.5, "evaluate": 0.6,
                      "speedup_eager_to_function": 4.0, "document_speedup": 2.25},
        "retracing": {"python_scalar_ms": 5.0, "tensor_ms": 0.5, "scalar_traces": 10,
                      "tensor_traces": 1, "ratio": 10.0},
        "scaling": [{"workload": "w", "batch_size": 1, "ms_per_step": 2.0, "samples_per_s": 500}],
        "seconds": 1.0,
    }
    text = format_tables(results)
    # The bar chart takes the same results, including a workload timed in one mode only.
    path = plot(results, str(tmp_path / "bench.png"))
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path
    assert ("eager -> function x10.0; function -> xla x0.50; loop_k1 / fixed-batch step = 1.12; "
            "loop k1 -> k32 x3.0") in text
    assert "loop / fit (<= 1: the loop is as fast): k1 0.90, k8 0.80, k32 1.00" in text
    assert "Mixed precision: mixed_bfloat16 step x1.25 the float32 step" in text
    assert "Test CPU" in text and "x4.0 (document: 1.80 s -> 0.8 s, x2.25)" in text


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="a GPU is present")
def test_bench_on_gpu_without_one_exits_non_zero():
    proc = subprocess.run([sys.executable, "-m", "spec_impl", "bench", "--device", "gpu"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "sees no GPU" in proc.stderr
