"""Each workload's table: the train step per mode (`eager`, `function`, `xla`) on one fixed
batch, the whole loop (`loop_k*`) beside `model.fit` (`fit_k*`) on the same batches at each
steps per call, the k-step loop as one XLA program (`xla_loop_k*`) and
`fit(jit_compile=True)` (`fit_xla_k*`), timed interleaved; every comparison with its interval
and verdict (group `train_step:<model>`)."""

import pytest

from benchmarks.conftest import quiet, record
from spec_impl.bench import WORKLOADS, WorkloadSpec
from spec_impl.bench.settings import comparisons, runner_names
from spec_impl.bench.suite import measure_workload


@pytest.mark.parametrize("name", WORKLOADS)
def test_train_step(benchmark, name, settings, peak):
    benchmark.group = f"train_step:{name}"
    rows, ratios, best = benchmark.pedantic(
        lambda: measure_workload(WorkloadSpec(name), settings, peak, quiet), rounds=1,
        iterations=1)
    assert [r["mode"] for r in rows] == runner_names(name, settings.level)
    assert [r["name"] for r in ratios] == [f"{a} / {b}"
                                           for a, b in comparisons(name, settings.level)]
    assert all(r["ms_per_step"] > 0 for r in rows)
    # the recommendation: the fastest of the train rows, against fit_k1
    train_rows = {r["mode"]: r["ms_per_step"] for r in rows if "loop_k" in r["mode"]}
    assert best["runner"] == min(train_rows, key=train_rows.get)
    assert best["vs_fit_k1"]["name"] == f"{best['runner']} / fit_k1"
    assert best["call"] == (f"train(model, ..., mode={best['mode']!r}, "
                            f"steps_per_execution={best['steps_per_execution']})")
    record(benchmark, rows, [*ratios, best["vs_fit_k1"]], recommendation=best["call"])
