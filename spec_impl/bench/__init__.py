"""The benchmark suite of `spec-impl bench` and `pytest benchmarks`: `settings` (what and how
long), `workloads` (the registry's five or a user's model), `runner` (the one timing method),
`stats` (ratios with an interval and a verdict), `suite` (the measurements), `report` (tables,
JSON) and `plot` (the speed-up chart)."""

from spec_impl.bench.flops import analytic_flops, count_graph
from spec_impl.bench.peak import best_matmul, measured_ghz, physical_cores, theoretical_peak
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
    "BenchSettings", "DISTRIBUTED_BATCH", "DISTRIBUTED_WORKLOADS", "EVAL_BATCH", "EVAL_SAMPLES",
    "GPU_MIXED_BATCH", "REPLICAS", "STEPS_PER_EXECUTION", "WORKLOADS", "Workload", "WorkloadSpec",
    "analytic_flops", "best_matmul", "build_workload", "count_graph", "distributed_trainer",
    "eval_data", "fit_runner", "has_bf16_instructions", "interleaved", "loop_runner",
    "machine_info", "make_trainer", "measured_ghz", "median_seconds", "parse_model", "peaks",
    "physical_cores", "rates", "same_batch_runner", "step_flops", "theoretical_peak", "timed",
    "tracing_count",
]
