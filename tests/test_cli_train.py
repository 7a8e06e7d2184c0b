"""`spec-impl train`: artefacts, errors, resume."""

import json
import os
import re
import shutil
import subprocess
import sys

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import load_dataset

MNIST_MLP_PARAMS = 407_050  # document 002's MNIST model
CONFUSION_PNG_SHAPE = (700, 800, 4)  # 10 classes at matplotlib's 100 dpi (see test_workflow)


def run(*args):
    return subprocess.run([sys.executable, "-m", "spec_impl", "train", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run("--model", "mnist_mlp", "--epochs", "1", "--limit", "256", "--out", str(out),
               "--log-dir", str(out / "logs"), "--quiet")
    return out, proc


def assert_artefacts_of_one_run(out, stdout):
    """The saved model is the one evaluated: its own predictions on the digits test split give the
    printed accuracy, and `report.txt` holds the printed report."""
    model = keras.models.load_model(out / "model.keras")
    assert model.count_params() == MNIST_MLP_PARAMS
    _, (x_test, y_test) = load_dataset("digits", input_shape=(784,))
    accuracy = np.mean(np.argmax(model.predict(x_test, verbose=0), axis=-1) == y_test)
    printed = re.search(r"test accuracy (\d\.\d{4})", stdout)
    assert printed and printed.group(1) == f"{accuracy:.4f}", stdout[-500:]
    report = (out / "report.txt").read_text()
    assert report.split("\nROC AUC")[0] in stdout and report.startswith(" " * 14 + "precision")
    assert matplotlib.image.imread(out / "confusion_matrix.png").shape == CONFUSION_PNG_SHAPE


def test_train_writes_every_artefact(finished_run):
    out, proc = finished_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_artefacts_of_one_run(out, proc.stdout)
    assert (out / "checkpoints" / "checkpoint").exists()
    assert os.listdir(out / "logs" / "train") and os.listdir(out / "logs" / "validation")
    assert "test accuracy" in proc.stdout and "tensorboard --logdir" in proc.stdout


def test_existing_checkpoints_need_resume(finished_run):
    out, _ = finished_run
    proc = run("--model", "mnist_mlp", "--epochs", "1", "--out", str(out), "--quiet")
    assert proc.returncode == 2
    assert "Pass --resume to continue it" in proc.stderr


def resumable_copy(finished_run, tmp_path):
    """A copy of the finished run's folder, so that a resumed run leaves the fixture as it was
    (the tests run in any order)."""
    out = tmp_path / "run"
    shutil.copytree(finished_run[0], out)
    return out


def test_resume_continues_to_the_requested_epochs(finished_run, tmp_path):
    out = resumable_copy(finished_run, tmp_path)
    proc = run("--model", "mnist_mlp", "--epochs", "2", "--limit", "256", "--out", str(out),
               "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Epoch 2/2" in proc.stdout and "Epoch 1/2" not in proc.stdout


def test_unknown_model_lists_the_valid_ones(tmp_path):
    proc = run("--model", "resnet50", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "unknown model 'resnet50'. Valid models:" in proc.stderr and "mini_inception" in proc.stderr


def test_unknown_dataset_lists_the_valid_ones(tmp_path):
    proc = run("--model", "mnist_mlp", "--data", "imagenet", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert "Unknown dataset 'imagenet'. Expected one of digits, mnist" in proc.stderr


def test_resume_of_a_finished_run_only_evaluates(finished_run, tmp_path):
    out = resumable_copy(finished_run, tmp_path)
    proc = run("--model", "mnist_mlp", "--epochs", "1", "--limit", "256", "--out", str(out),
               "--resume", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Nothing to train" in proc.stdout and "already reach --epochs 1" in proc.stdout
    assert "test accuracy" in proc.stdout


def test_mixed_precision_and_several_steps_per_call(tmp_path):
    proc = run("--model", "mnist_mlp", "--epochs", "1", "--limit", "128", "--out", str(tmp_path),
               "--precision", "mixed_bfloat16", "--steps-per-execution", "3", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    model = keras.models.load_model(tmp_path / "model.keras")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    # The hidden Dense computes in bfloat16, the softmax output in float32; variables float32.
    assert [layer.compute_dtype for layer in dense] == ["bfloat16", "float32"]
    assert {w.dtype for w in model.weights} == {"float32"}
    assert "test accuracy" in proc.stdout


def test_auto_mode_and_steps_with_mixed_precision_print_the_choice(tmp_path):
    proc = run("--model", "mnist_mlp", "--epochs", "2", "--limit", "320", "--out", str(tmp_path),
               "--precision", "mixed_bfloat16", "--mode", "auto", "--steps-per-execution", "auto",
               "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 10 steps an epoch: k = 1 and 8 are candidates, k = 32 is longer than an epoch
    line = next(line for line in proc.stdout.splitlines() if line.startswith("execution: "))
    saved = json.loads((tmp_path / "checkpoints" / "execution.json").read_text())
    assert line.startswith(f"execution: {saved['mode']} mode, {saved['steps_per_execution']} "
                           f"step(s) per call (calibration; ms per step: ")
    assert set(saved["ms_per_step"]) <= {"function_k1", "function_k8", "xla_k8"}
    assert "function_k1" in saved["ms_per_step"]
    model = keras.models.load_model(tmp_path / "model.keras")
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    # the precision asked, never changed: the hidden Dense in bfloat16, the output in float32
    assert [layer.compute_dtype for layer in dense] == ["bfloat16", "float32"]


@pytest.mark.parametrize("flag,value,message", [
    ("--steps-per-execution", "0", "expected a positive integer or auto, received '0'"),
    ("--mode", "fast", "invalid choice: 'fast'"),
    ("--precision", "float16", "invalid choice: 'float16'"),
])
def test_bad_precision_or_steps_per_execution(flag, value, message, tmp_path):
    proc = run("--model", "mnist_mlp", "--out", str(tmp_path), flag, value)
    assert proc.returncode == 2 and message in proc.stderr


def test_train_on_two_mirrored_devices(tmp_path):
    """The two-replica run saves the model it evaluated, and its checkpoint holds the same weights.
    (Its weights differ from a one-device run's: each replica draws its own dropout masks; the
    library's mirrored training is held to one device in tests/distributed/.)"""
    proc = run("--model", "mnist_mlp", "--epochs", "1", "--limit", "128", "--out", str(tmp_path),
               "--strategy", "mirrored", "--devices", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_artefacts_of_one_run(tmp_path, proc.stdout)
    saved = keras.models.load_model(tmp_path / "model.keras")
    reader = tf.train.load_checkpoint(str(tmp_path / "checkpoints"))
    # The checkpoint numbers the model's variables in order (the dropout's seed state among them).
    trained = [(i, v) for i, v in enumerate(saved.variables) if v.trainable]
    assert [v.path for _, v in trained] == ["dense/kernel", "dense/bias", "dense_1/kernel",
                                            "dense_1/bias"]
    for i, variable in trained:
        np.testing.assert_array_equal(
            reader.get_tensor(f"model/v{i:05d}/.ATTRIBUTES/VARIABLE_VALUE"), variable.numpy())


@pytest.mark.parametrize("args, message", [
    (("train", "--strategy", "default", "--devices", "2"), "`devices` applies to kind='mirrored' only"),
    (("train", "--strategy", "multiworker"), "reads the cluster from the TF_CONFIG environment"),
    (("bench", "--strategy", "multiworker"), "the distributed table is `--strategy mirrored"),
])
def test_strategy_errors(args, message, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    proc = subprocess.run([sys.executable, "-m", "spec_impl", *args, *(
        ("--out", str(tmp_path)) if args[0] == "train" else ())],
        capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr
