"""The benchmark suite of `spec-impl bench` and `pytest benchmarks`: `settings` (what and how
long), `workloads` (the registry's five or a user's model), `runner` (the one timing method),
`stats` (ratios with an interval and a verdict), `suite` (the measurements), `report` (tables,
JSON) and `plot` (the speed-up chart)."""

from spec_impl.bench.runner import (
    distributed_trainer,
    eval_data,
    fit_runner,
    has_bf16_instructions,
    interleaved,
    loop_runner,
    machine_info,
    make_trainer,
    median_seconds,
    peak_gflops,
    peaks,
    rates,
    same_batch_runner,
    step_flops,
    timed,
    tracing_count,
)
from spec_impl.bench.settings import (
    DISTRIBUTED_BATCH,
    DISTRIBUTED_WORKLOADS,
    EVAL_BATCH,
    EVAL_SAMPLES,
    GPU_MIXED_BATCH,
    REPLICAS,
    STEPS_PER_EXECUTION,
    WORKLOADS,
    BenchSettings,
)
from spec_impl.bench.workloads import Workload, WorkloadSpec, build_workload, parse_model

__all__ = [
    "DISTRIBUTED_BATCH", "DISTRIBUTED_WORKLOADS", "EVAL_BATCH", "EVAL_SAMPLES", "GPU_MIXED_BATCH",
    "REPLICAS", "STEPS_PER_EXECUTION", "WORKLOADS", "BenchSettings", "Workload",
    "WorkloadSpec", "build_workload", "distributed_trainer", "eval_data", "fit_runner",
    "has_bf16_instructions", "interleaved", "loop_runner", "machine_info", "make_trainer", "median_seconds",
    "parse_model", "peak_gflops", "peaks", "rates", "same_batch_runner", "step_flops", "timed",
    "tracing_count",
]
