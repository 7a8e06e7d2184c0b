"""`spec-impl train` under faults: a real SIGTERM sent to the process, a NaN in the data, bad
numeric flags, and the permissions of every file it writes."""

import os
import re
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

# The Sequential CNN on 320 digits, 12 epochs of 10 steps: like the default MiniInception it has
# batch norms, recalibrated after each epoch, at about a twentieth of its time per step. A
# SIGTERM sent once epoch 1's checkpoint exists lands in the middle of training (eleven epochs,
# seconds, are left).
ARGS = ("--model", "sequential_cnn", "--limit", "320", "--epochs", "12", "--quiet")
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
    for got, want in zip(weights(out / "model.keras"), weights(tmp_path / "reference" / "model.keras"),
                         strict=True):
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


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002, 0o077])
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
    folders = [out, *(p for p in out.rglob("*") if p.is_dir())]
    assert {p.name for p in folders} >= {"run", "checkpoints", "logs", "train", "validation"}
    modes = {str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in folders}
    assert modes == dict.fromkeys(modes, oct(0o777 & ~umask))


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


# ---- bad paths and inputs, refused before any work ----

def _bad_paths(tmp_path):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out_with = {}
    for name, kind in (("checkpoints", "file"), ("model.keras", "folder")):
        out = tmp_path / f"out_{name}"
        out.mkdir()
        (out / name).mkdir() if kind == "folder" else (out / name).write_text("x")
        out_with[name] = out
    npz_folder = tmp_path / "data.npz"
    npz_folder.mkdir()
    return [
        (["bench", "--json", str(folder)], f"--json {folder}: expected a file name, but it is a folder"),
        (["bench", "--json", str(tmp_path / "missing" / "b.json")],
         f"the folder {tmp_path / 'missing'} does not exist"),
        (["bench", "--plot", str(tmp_path / "missing" / "b.png")],
         f"the folder {tmp_path / 'missing'} does not exist"),
        (["bench", "--plot", str(tmp_path / "chart.xyz")], "unknown image format 'xyz'"),
        (["idioms", "--json", str(folder)], f"--json {folder}: expected a file name, but it is a folder"),
        (["train", "--out", str(a_file)], f"--out {a_file}: expected a folder, but it is a file"),
        (["train", "--out", str(a_file / "run")], f"cannot create a folder there: {a_file} is a file"),
        (["train", "--out", str(out_with["checkpoints"])],
         f"{out_with['checkpoints'] / 'checkpoints'} is a file, where the run keeps its checkpoints"),
        (["train", "--out", str(out_with["model.keras"])],
         f"{out_with['model.keras'] / 'model.keras'} is a folder, where the run writes its model.keras"),
        (["train", "--out", str(tmp_path / "run"), "--log-dir", str(a_file)],
         f"--log-dir {a_file}: expected a folder, but it is a file"),
        (["train", "--out", str(tmp_path / "run"), "--data", str(npz_folder)],
         f"--data {npz_folder}: expected a file, but it is a folder"),
        (["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path / "none.npz")],
         f"--data {tmp_path / 'none.npz'}: no such file"),
        (["bench", "--smoke", "--model", "mlp", "--input-shape", "0"],
         "--input-shape '0': expected positive sizes separated by commas"),
        (["bench", "--smoke", "--model", "mlp", "--input-shape", "8,0"],
         "--input-shape '8,0': expected positive sizes separated by commas"),
    ]


def test_bad_paths_and_shapes_are_refused_before_any_work(tmp_path, capsys):
    for argv, message in _bad_paths(tmp_path):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"spec-impl {argv[0]}: ") and message in err, (argv, err)
        assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # nothing was started


def test_a_read_only_out_is_refused_before_training(tmp_path, capsys):
    from test_faults_edges import read_only

    out = tmp_path / "ro"
    out.mkdir()
    with read_only(out):
        assert main(["train", "--out", str(out / "run")]) == 2
    why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"  # mount or chmod
    assert capsys.readouterr().err == f"spec-impl train: --out {out / 'run'}: cannot write in {out} ({why})\n"


def test_a_result_file_that_cannot_be_written_after_the_run_is_one_line(tmp_path, capsys):
    import argparse

    from test_faults_edges import read_only

    from spec_impl.cli import _write_outputs

    folder = tmp_path / "results"
    folder.mkdir()
    args = argparse.Namespace(command="bench", json=str(folder / "b.json"), plot=None)
    with read_only(folder):
        assert _write_outputs(args, {"rows": []}) == 1
    why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert capsys.readouterr().err == (f"spec-impl bench: could not write {folder / 'b.json'}: "
                                       f"{why} (the tables above are complete)\n")
    assert list(folder.iterdir()) == []


def _user_module(tmp_path, monkeypatch):
    (tmp_path / "user_models.py").write_text(
        "import keras\n"
        "def needs_arguments(units):\n"
        "    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])\n"
        "def variable_inputs():\n"
        "    a, b = keras.Input((None,), name='a'), keras.Input((None,), name='b')\n"
        "    return keras.Model([a, b], keras.layers.Concatenate()([a, b]))\n")
    (tmp_path / "broken_models.py").write_text("raise RuntimeError('the user module is broken')\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.parametrize("model, message", [
    ("broken_models:build", "--model broken_models:build: cannot import build from broken_models "
                            "(RuntimeError: the user module is broken)"),
    ("user_models:needs_arguments", "--model user_models:needs_arguments: needs_arguments() raised "
                                    "TypeError: needs_arguments() missing 1 required positional "
                                    "argument: 'units'; expected a function that takes no arguments"),
    ("user_models:variable_inputs", "--model user_models:variable_inputs: the inputs a (None,), "
                                    "b (None,) have sizes the model leaves open (None)"),
    ("truncated.keras", "cannot load it (ValueError: "),
])
def test_bench_reports_a_bad_user_model_in_one_line(model, message, tmp_path, monkeypatch, capsys):
    _user_module(tmp_path, monkeypatch)
    monkeypatch.chdir(tmp_path)
    saved = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    saved.save(tmp_path / "whole.keras")
    data = (tmp_path / "whole.keras").read_bytes()
    (tmp_path / "truncated.keras").write_bytes(data[: len(data) // 2])
    assert main(["bench", "--smoke", "--model", model, "--loss", "mse"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("spec-impl bench: ") and message in err[-1], err[-1]
    assert "Traceback" not in "\n".join(err)


# ---- signals and failures of a real `spec-impl train` process ----

MLP = ("--model", "mnist_mlp", "--limit", "320", "--quiet")


def test_sigint_exits_130_with_a_checkpoint_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "spec_impl", "train", "--out", str(out), *MLP, "--epochs", "200"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:
        deadline = time.monotonic() + TIMEOUT
        while not (out / "checkpoints" / "ckpt-1.index").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("spec-impl train: Stopped by SIGINT after epoch "), last
    assert last.endswith("Rerun the same command to continue (add --resume).")
    resumed = subprocess.run([*argv[:-1], "3", "--resume"], capture_output=True, text=True,
                             timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "model.keras").exists()


AFTER_THE_LOOP = """
import os, signal, sys
import spec_impl.workflow as workflow
from spec_impl.cli import main
evaluate = workflow.evaluate_classifier
def evaluate_under_sigterm(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # the loop is over: the model is being evaluated
    return evaluate(*args, **kwargs)
workflow.evaluate_classifier = evaluate_under_sigterm
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_after_the_loop_finishes_the_run_and_exits_42(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", AFTER_THE_LOOP, "train", "--out", str(out), *MLP,
                           "--epochs", "1"], capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "spec-impl train: SIGTERM received after training; the run finished and its model and "
        "report are written.")
    assert (out / "model.keras").exists() and (out / "report.txt").exists()


FULL_DISK_AT_SAVE = """
import resource, signal, sys
import spec_impl.workflow as workflow
from spec_impl.cli import main
save = workflow.save_model_atomic
def save_on_a_full_disk(*args, **kwargs):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    return save(*args, **kwargs)
workflow.save_model_atomic = save_on_a_full_disk
sys.exit(main(sys.argv[1:]))
"""


def test_a_model_that_cannot_be_saved_is_one_line_naming_the_file_and_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), *MLP, "--epochs", "1"]
    proc = subprocess.run([sys.executable, "-c", FULL_DISK_AT_SAVE, *argv], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"spec-impl train: could not write {out / 'model.keras'}: File too large. The last "
        f"checkpoint is {out / 'checkpoints' / 'ckpt-1'}: fix the cause and rerun with --resume.")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no temporary file left
    resumed = subprocess.run([sys.executable, "-m", "spec_impl", *argv, "--resume"],
                             capture_output=True, text=True, timeout=TIMEOUT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Nothing to train" in resumed.stdout and (out / "model.keras").exists()


def test_an_update_that_overflows_fails_the_run_and_saves_no_model(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "spec_impl", "train", "--out", str(out), *MLP,
                           "--epochs", "1", "--learning-rate", "1e39"], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.match(r"spec-impl train: Non-finite weights \(.*\) after epoch 1, step 1: the "
                    r"optimizer's update overflowed", proc.stderr.strip().splitlines()[-1])
    assert not (out / "model.keras").exists()


def test_a_dataset_missing_from_the_keras_cache_is_bad_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_cache"))
    assert main(["train", "--model", "mnist_mlp", "--data", "cifar10", "--out",
                 str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spec-impl train: ") and "cifar10" in err[0], err
    assert not (tmp_path / "run" / "checkpoints").exists()
