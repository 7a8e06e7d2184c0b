"""The package's loop under `MirroredStrategy` on 1, 2 and 4 logical CPU devices against no
strategy, at one global batch (group `distributed`).

The CPU must be split into devices before TensorFlow starts, which would change every other
benchmark of this process, so the measurement runs where the split is wanted only: in its own
process, `spec-impl bench --strategy mirrored --devices 4`, with this run's settings. On a CPU the
logical devices share the same cores, so no speed-up is expected; the ratios are the strategy's
per-step overhead against no strategy.
"""

import json
import subprocess
import sys

from benchmarks.conftest import record
from spec_impl.bench import DISTRIBUTED_WORKLOADS, REPLICAS


def test_distributed(benchmark, settings, tmp_path):
    benchmark.group = "distributed"
    out = tmp_path / "distributed.json"
    level = {"smoke": ["--smoke"], "quick": ["--quick"], "full": []}[settings.level]
    # smoke checks that it runs: two devices take each path (one replica, several) in half the
    # time of four
    devices = 2 if settings.level == "smoke" else max(REPLICAS)
    replicas = tuple(n for n in REPLICAS if n <= devices)
    command = [sys.executable, "-m", "spec_impl", "bench", "--strategy", "mirrored", "--devices",
               str(devices), "--json", str(out), *level]

    def measure():
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    results = benchmark.pedantic(measure, rounds=1, iterations=1)
    assert [(r["workload"], r["replicas"]) for r in results["distributed"]] == [
        (name, n) for name in DISTRIBUTED_WORKLOADS for n in (None, *replicas)]
    assert [r["name"] for r in results["ratios"]] == [
        f"replicas_{n} / none" for _ in DISTRIBUTED_WORKLOADS for n in replicas]
    record(benchmark, results["distributed"], results["ratios"])
