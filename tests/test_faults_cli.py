"""`spec-impl train` under faults: a real SIGTERM sent to the process, a NaN in the data, bad
numeric flags, and the permissions of every file it writes."""

import os
import signal
import stat
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from spec_impl.cli import main
from spec_impl.trainer.preemption import PREEMPTED_EXIT_CODE

# MiniInception (the default model) on 320 digits, 3 epochs of 10 steps: a SIGTERM sent once
# epoch 1's checkpoint exists lands in the middle of training (two epochs are left).
ARGS = ("--limit", "320", "--epochs", "3", "--quiet")
TIMEOUT = 600


def command(out, *extra):
    return [sys.executable, "-m", "spec_impl", "train", "--out", str(out), *ARGS, *extra]


def weights(path):
    import spec_impl.inception  # noqa: F401  (registers MiniInception for loading)

    return keras.saving.load_model(path).get_weights()


@pytest.mark.slow
def test_sigterm_mid_run_exits_42_and_the_rerun_ends_bit_identical(tmp_path):
    reference = subprocess.run(command(tmp_path / "reference"), capture_output=True, text=True,
                               timeout=TIMEOUT)
    assert reference.returncode == 0, reference.stderr[-2000:]

    out = tmp_path / "preempted"
    with subprocess.Popen(command(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        index = out / "checkpoints" / "checkpoint"
        deadline = time.monotonic() + TIMEOUT
        while not index.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == PREEMPTED_EXIT_CODE, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("spec-impl train: Stopped by SIGTERM after epoch ")
    assert lines[-1].endswith("; run again with the same checkpoint folder to resume from it. "
                              "Rerun the same command to continue (add --resume).")
    assert not (out / "model.keras").exists()

    resumed = subprocess.run(command(out, "--resume"), capture_output=True, text=True,
                             timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for got, want in zip(weights(out / "model.keras"), weights(tmp_path / "reference" / "model.keras")):
        np.testing.assert_array_equal(got, want)


def _npz_with_nan(path):
    from spec_impl import load_dataset

    (x, y), (x_test, y_test) = load_dataset("digits", input_shape=(64,))
    x = x[:128].copy()
    x[40, 3] = np.nan  # the second batch of 32
    np.savez(path, x_train=x.reshape(-1, 8, 8), y_train=y[:128], x_test=x_test[:64].reshape(-1, 8, 8),
             y_test=y_test[:64])
    return path


@pytest.mark.parametrize("on_nan, code, message", [
    ("stop", 1, "spec-impl train: Non-finite loss nan at epoch 1, step 2: training stopped"),
    ("skip", 0, "RuntimeWarning: Skipped 1 step(s) with a non-finite loss or gradient in "
                "epoch 1, the last at step 2"),
])
def test_on_nan_from_the_command_line(on_nan, code, message, tmp_path):
    data = _npz_with_nan(tmp_path / "nan.npz")
    proc = subprocess.run([sys.executable, "-m", "spec_impl", "train", "--model", "mnist_mlp",
                           "--data", str(data), "--epochs", "1", "--out", str(tmp_path / "run"),
                           "--quiet", "--on-nan", on_nan], capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr


@pytest.mark.parametrize("flag, value, expected", [
    ("--epochs", "-1", "a positive integer"),
    ("--epochs", "0", "a positive integer"),
    ("--limit", "0", "a positive integer"),
    ("--limit", "-5", "a positive integer"),
    ("--batch-size", "0", "a positive integer"),
    ("--steps-per-execution", "2.5", "a positive integer or auto"),
    ("--learning-rate", "-0.1", "a positive number"),
    ("--learning-rate", "nan", "a positive number"),
    ("--learning-rate", "inf", "a positive number"),
    ("--seed", "-1", "a non-negative integer"),
    ("--max-skipped", "0", "a positive integer"),
    ("--devices", "0", "a positive integer"),
])
def test_numeric_flags_are_checked_by_the_parser(flag, value, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", flag, value])
    assert info.value.code == 2
    assert f"error: argument {flag}: expected {expected}, received '{value}'" in \
        capsys.readouterr().err


def test_bench_batch_size_is_checked_by_the_parser(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "--batch-size", "-3"])
    assert info.value.code == 2
    assert "argument --batch-size: expected a positive integer, received '-3'" in \
        capsys.readouterr().err


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_every_file_written_gets_the_umask_permissions(umask, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "spec_impl", "train", "--model", "mnist_mlp", "--epochs", "1",
         "--limit", "64", "--out", str(out), "--log-dir", str(out / "logs"), "--quiet"],
        capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"model.keras", "report.txt", "confusion_matrix.png",
                                       "checkpoint"}
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == dict.fromkeys(modes, oct(0o666 & ~umask))


def test_library_writers_get_the_umask_permissions(tmp_path):
    from spec_impl import save_model_atomic
    from spec_impl._plot import new_figure
    from spec_impl.saving import save_figure_atomic, write_atomic_text

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    previous = os.umask(0o027)
    try:
        written = [save_model_atomic(model, tmp_path / "m.keras"),
                   write_atomic_text(tmp_path / "r.json", "{}"),
                   save_figure_atomic(new_figure((2, 2)), tmp_path / "p.png")]
    finally:
        os.umask(previous)
    assert [oct(stat.S_IMODE(os.stat(p).st_mode)) for p in written] == [oct(0o640)] * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras", "p.png", "r.json"]
