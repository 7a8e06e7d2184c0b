"""Benchmarks to keep: the interval methods' error rates on synthetic rounds of known ratio,
`spec-impl bench --compare` (the table, the threshold's exit code, the refusal of files that
cannot be compared), the provenance and raw rounds of every JSON, `--runners`, and the tables
a stopped run keeps."""

import copy
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from spec_impl.bench import WORKLOADS, BenchSettings
from spec_impl.bench.compare import compare_results, regressions
from spec_impl.bench.provenance import KERNEL_FLAGS, SCHEMA_VERSION, provenance
from spec_impl.bench.settings import MIN_ROUNDS, PLAN, USER_PLAN
from spec_impl.bench.stats import MIN_VERDICT_ROUNDS, ratio_interval, shift_interval, verdict
from spec_impl.cli import main

DRAWS = 20_000  # synthetic runs per round count: a false-verdict rate to within about 0.2 %
NOISE = 0.05  # each round's log-time scatters by 5 % (a quiet machine's spread)


def _round_counts():
    """Every round count a run of the command can end with: 2 at --smoke, and from MIN_ROUNDS
    (the budget stops there at the earliest) to the most rounds of any level and workload."""
    most = max(BenchSettings(level).rounds(name) for level in ("full", "quick")
               for name in [*WORKLOADS, "user:model"])
    return [BenchSettings("smoke").rounds("mnist_mlp"), *range(MIN_ROUNDS, most + 1)]


def _paired(n, ratio, rng):
    """`DRAWS` runs of two runners timed round by round: a drift shared by both rounds of a
    pair (the machine's slow spells), each runner's own noise, the first `ratio` times the
    second."""
    drift = np.exp(rng.normal(0, 0.3, (DRAWS, n)))
    a = ratio * drift * np.exp(rng.normal(0, NOISE, (DRAWS, n)))
    b = drift * np.exp(rng.normal(0, NOISE, (DRAWS, n)))
    return a, b


def _verdicts(pairs, interval):
    return [verdict(*interval(a, b)[1:]) for a, b in zip(*pairs, strict=True)]


def test_the_verdict_needs_six_rounds():
    assert MIN_VERDICT_ROUNDS == MIN_ROUNDS == 6  # the sign test's 95 % needs 2 / 2**6 < 0.05
    assert ratio_interval([1.0] * 5, [2.0] * 5)[1:] == (None, None)
    assert ratio_interval([1.0] * 6, [2.0] * 6)[1:] == (0.5, 0.5)


@pytest.mark.parametrize("n", _round_counts())
def test_equal_runners_get_a_false_verdict_in_at_most_5_percent(n):
    rng = np.random.default_rng(n)
    verdicts = _verdicts(_paired(n, 1.0, rng), ratio_interval)
    false = sum(v in ("faster", "slower") for v in verdicts) / DRAWS
    if n < MIN_VERDICT_ROUNDS:
        assert set(verdicts) == {None}  # too few rounds: no verdict at all
    else:
        assert false <= 0.05, false


@pytest.mark.parametrize("n", [c for c in _round_counts() if c >= MIN_VERDICT_ROUNDS])
def test_a_20_percent_shift_is_slower(n):
    rng = np.random.default_rng(100 + n)
    verdicts = _verdicts(_paired(n, 1.2, rng), ratio_interval)
    assert verdicts.count("slower") / DRAWS >= 0.95
    assert "faster" not in verdicts


@pytest.mark.parametrize("m, n", [(2, 2), (3, 3), (4, 4), (6, 6), (9, 6), (9, 9)])
def test_the_comparison_of_two_runs_errs_at_most_5_percent_and_sees_a_20_percent_shift(m, n):
    rng = np.random.default_rng(m * 10 + n)
    draws = 2000  # the exact U distribution of each draw: slower than the paired interval
    same = [shift_interval(np.exp(rng.normal(0, NOISE, m)), np.exp(rng.normal(0, NOISE, n)))
            for _ in range(draws)]
    shifted = [shift_interval(1.2 * np.exp(rng.normal(0, NOISE, m)),
                              np.exp(rng.normal(0, NOISE, n))) for _ in range(draws)]
    if m * n < 16:  # 2 of 2, 3 of 3: no 95 % interval exists
        assert {r[1] for r in same} == {None}
        return
    assert sum(verdict(*r[1:]) in ("faster", "slower") for r in same) / draws <= 0.05
    assert sum(verdict(*r[1:]) == "slower" for r in shifted) / draws >= 0.9


def test_an_interval_never_excludes_or_ends_at_its_estimate():
    rng = np.random.default_rng(7)
    for n in range(MIN_VERDICT_ROUNDS, 12):
        a, b = np.exp(rng.normal(0, 0.1, n)), np.exp(rng.normal(0, 0.1, n))
        value, low, high = ratio_interval(a, b)
        assert low < value < high
        value, low, high = shift_interval(a, b)
        assert low < value < high


# ---- --compare ----

def _results(rng, scale=1.0, rounds=8, machine=None):
    """A benchmark JSON of two runners with `rounds` raw rounds, `scale` times slower."""
    rows = []
    for runner, ms in (("function", 2.0), ("loop_k8", 1.0)):
        seconds = list(scale * ms / 1e3 * np.exp(rng.normal(0, 0.02, rounds)))
        rows.append({"workload": "mnist_mlp", "mode": runner, "ms_per_step": 1e3 * np.median(seconds),
                     "rounds_s_per_step": seconds})
    return {"schema_version": SCHEMA_VERSION, "machine": machine or _MACHINE, "level": "quick",
            "selection": {"level": "quick", "models": [{"name": "mnist_mlp", "batch_size": None,
                                                        "input_shape": None, "loss": None}],
                          "runners": None},
            "train_steps": rows, "ratios": []}


_MACHINE = {"cpu": "Test CPU", "cores": 2, "device": "cpu", "tensorflow": "2.21.0",
            "keras": "3.15.1", **dict.fromkeys(KERNEL_FLAGS, False)}


def _write(tmp_path, name, results):
    path = tmp_path / name
    path.write_text(json.dumps(results))
    return str(path)


def test_compare_prints_the_table_and_fails_only_on_a_regression_beyond_the_threshold(
        tmp_path, capsys):
    rng = np.random.default_rng(0)
    base = _write(tmp_path, "base.json", _results(rng))
    same = _write(tmp_path, "same.json", _results(rng))
    slower = _write(tmp_path, "slower.json", _results(rng, scale=1.5))
    assert main(["bench", "--compare", base, same, "--fail-on-slower", "5"]) == 0
    out = capsys.readouterr().out
    assert "mnist_mlp\n  function " in out and " no difference" in out
    assert main(["bench", "--compare", base, slower, "--fail-on-slower", "5",
                 "--plot", str(tmp_path / "c.png")]) == 1
    captured = capsys.readouterr()
    assert captured.out.count(" slower") == 2 and (tmp_path / "c.png").exists()
    assert captured.err.startswith("spec-impl bench: slower by more than 5 %: mnist_mlp/function 1.5")
    assert main(["bench", "--compare", base, slower, "--fail-on-slower", "60"]) == 0  # within it


def test_the_threshold_is_the_intervals_lower_end():
    rng = np.random.default_rng(1)
    comparison = compare_results(_results(rng), _results(rng, scale=1.5))
    (row, *_) = comparison["rows"]
    assert row["verdict"] == "slower" and 1.4 < row["low"] < row["value"] < row["high"] < 1.6
    assert regressions(comparison, 100 * (row["low"] - 1) - 1) != []
    assert regressions(comparison, 100 * (row["low"] - 1) + 1) == []


def test_files_that_cannot_be_compared_are_refused(tmp_path, capsys):
    rng = np.random.default_rng(2)
    base = _results(rng)
    old = copy.deepcopy(base)
    del old["schema_version"]
    other = _results(rng, machine={**_MACHINE, "tensorflow": "2.16.2", "avx512f": True})
    paths = {name: _write(tmp_path, f"{name}.json", r)
             for name, r in (("base", base), ("old", old), ("other", other))}
    assert main(["bench", "--compare", paths["old"], paths["base"]]) == 2
    assert capsys.readouterr().err == (
        f"spec-impl bench: {paths['old']} has no schema_version: it was written by an older "
        f"spec-impl, without the raw rounds a comparison needs. Run the benchmark again to "
        f"compare.\n")
    assert main(["bench", "--compare", paths["base"], paths["other"]]) == 2
    assert capsys.readouterr().err == (
        "spec-impl bench: The two runs were measured on different machines or versions "
        "(tensorflow: 2.21.0 -> 2.16.2; avx512f: False -> True): pass --force to compare them "
        "anyway.\n")
    assert main(["bench", "--compare", paths["base"], paths["other"], "--force"]) == 0
    assert "compared with --force although they differ: tensorflow: 2.21.0 -> 2.16.2; avx512f: " \
           "False -> True" in capsys.readouterr().out
    for argv, message in [(["--compare", "a", "b", "c"], "--compare takes BASE.json and at most"),
                          (["--fail-on-slower", "5"], "--fail-on-slower and --force apply to "
                                                      "--compare"),
                          (["--compare", str(tmp_path / "none.json")], "no such file")]:
        assert main(["bench", *argv]) == 2
        assert message in capsys.readouterr().err


# ---- what a JSON holds, --runners, and a stopped run ----

def test_provenance_names_what_makes_two_runs_comparable(monkeypatch):
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    monkeypatch.setattr(sys, "argv", ["spec-impl", "bench", "--quick"])
    info = provenance()
    assert {"cpu", "cores", "memory_bytes", "device", *KERNEL_FLAGS, "python", "tensorflow",
            "keras", "numpy", "spec_impl", "git_commit", "command", "environment", "date"} <= set(info)
    assert info["command"] == "spec-impl bench --quick"
    assert info["environment"] == {"TF_ENABLE_ONEDNN_OPTS": "0", **{
        k: v for k, v in info["environment"].items() if k != "TF_ENABLE_ONEDNN_OPTS"}}
    assert info["memory_bytes"] > 2**30 and info["cores"] >= 1
    assert all(isinstance(info[flag], bool) for flag in KERNEL_FLAGS)


@pytest.mark.slow
def test_a_smoke_run_twice_compares_and_keeps_rounds_memory_and_runners(tmp_path, capsys):
    runs = []
    for name in ("a.json", "b.json"):
        path = tmp_path / name
        assert main(["bench", "--smoke", "--model", "mnist_mlp", "--runners",
                     "function,loop_k1,fit_k1", "--json", str(path)]) == 0
        runs.append(str(path))
    results = json.loads((tmp_path / "a.json").read_text())
    assert results["schema_version"] == SCHEMA_VERSION and results["complete"] is True
    assert [r["mode"] for r in results["train_steps"]] == ["function", "loop_k1", "fit_k1"]
    for row in results["train_steps"]:
        assert len(row["rounds_s_per_step"]) == 2  # --smoke's rounds, each kept
        assert row["ms_per_step"] == pytest.approx(1e3 * np.median(row["rounds_s_per_step"]))
        assert row["peak_host_bytes"] > 2**20 and row["peak_device_bytes"] is None
    assert [r["name"] for r in results["ratios"]] == ["loop_k1 / fit_k1"]
    assert [r["verdict"] for r in results["ratios"]] == [None]  # --smoke: no verdict
    out = capsys.readouterr().out
    assert "loop_k1 / fit_k1          " not in out and "(2 rounds: no verdict under 6)" in out
    assert main(["bench", "--compare", *runs]) == 0
    assert "(2 and 2 rounds: no verdict)" in capsys.readouterr().out


def test_an_unknown_runner_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--runners", "function,fast"])
    assert info.value.code == 2
    assert "argument --runners: expected runner names separated by commas" in capsys.readouterr().err


@pytest.mark.slow
def test_a_stopped_run_keeps_the_tables_it_finished(tmp_path):
    out = tmp_path / "partial.json"
    argv = [sys.executable, "-m", "spec_impl", "bench", "--smoke", "--model", "mnist_mlp",
            "--model", "residual_regressor", "--runners", "function,loop_k1", "--json", str(out)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        deadline = time.monotonic() + 600
        while not out.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=600)
    results = json.loads(out.read_text())
    assert results["complete"] is False
    assert {r["workload"] for r in results["train_steps"]} == {"mnist_mlp"}
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    assert stderr.strip().splitlines()[-1] == (
        f"spec-impl bench: stopped by SIGTERM after 1 finished table(s); {out} holds them.")


def test_the_plans_keep_at_least_the_verdicts_rounds():
    assert all(BenchSettings(level).rounds(name) >= MIN_ROUNDS
               for level in ("full", "quick") for name in [*PLAN, "user:model"])
    assert BenchSettings("full").rounds("mnist_mlp") >= 9 and USER_PLAN[1] < 9  # raised to 9
    assert BenchSettings("full").rounds("user:model") == 9
