"""`train_and_evaluate`, the library call behind `spec-impl train`, tested in-process."""

import shutil

import keras
import matplotlib.image
import pytest

from spec_impl import RunResult, train_and_evaluate

DIGITS_TEST = 360  # load_digits: 1,797 images, a stratified 20 % test split


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train_and_evaluate("mnist_mlp", out=str(out), epochs=1, limit=128, verbose=0,
                                   steps_per_execution=2, log_dir=str(out / "logs"))


def test_trains_saves_and_evaluates(run):
    out, result = run
    assert isinstance(result, RunResult)
    assert len(result.history.history["loss"]) == 1 and len(result.history.history["val_accuracy"]) == 1
    assert result.model_path == str(out / "model.keras")
    reloaded = keras.models.load_model(result.model_path)
    assert reloaded.count_params() == result.model.count_params() == 407_050  # document 002
    assert sum(result.evaluation["confusion_matrix"].sum(axis=1)) == DIGITS_TEST
    ev = result.evaluation
    assert (out / "report.txt").read_text() == (
        ev["report"] + f"\nROC AUC (one-vs-rest, probabilities): {ev['roc_auc_ovr']:.4f}\n"
        f"ROC AUC (document 000, binarized labels): {ev['roc_auc_document']:.4f}\n")
    # 10 classes: a figure of (0.6 * 10 + 2) x (0.6 * 10 + 1) inches at matplotlib's 100 dpi
    assert matplotlib.image.imread(out / "confusion_matrix.png").shape == (700, 800, 4)
    assert (out / "logs" / "train").is_dir() and (out / "logs" / "validation").is_dir()


def test_existing_checkpoints_need_resume(run):
    out, _ = run
    with pytest.raises(ValueError, match=r"holds checkpoints of an earlier run. Pass --resume"):
        train_and_evaluate("mnist_mlp", out=str(out), epochs=1, limit=128, verbose=0)


def test_resume_of_a_finished_run_only_evaluates(run, tmp_path):
    out, first = run
    copy = tmp_path / "run"  # the resumed run writes its model and report: not into the fixture
    shutil.copytree(out, copy)
    again = train_and_evaluate("mnist_mlp", out=str(copy), epochs=1, limit=128, verbose=0,
                               resume=True)
    assert again.history.history == {}
    assert again.evaluation["accuracy"] == pytest.approx(first.evaluation["accuracy"])


@pytest.mark.parametrize("kwargs,message", [
    ({"model": "resnet50"}, r"unknown model 'resnet50'. Valid models: .*mini_inception"),
    ({"model": "residual_regressor"}, r"unknown model 'residual_regressor'. Valid models:"),
    ({"precision": "float16"}, r"precision among float32, mixed_float16, mixed_bfloat16. "
                               r"Received: precision='float16'"),
    ({"data": "imagenet"}, r"Unknown dataset 'imagenet'. Expected one of digits"),
])
def test_bad_arguments_name_the_value_and_what_was_expected(kwargs, message, tmp_path):
    kwargs = {"model": "mnist_mlp", **kwargs}
    with pytest.raises(ValueError, match=message):
        train_and_evaluate(out=str(tmp_path), epochs=1, limit=64, verbose=0, **kwargs)
    assert not (tmp_path / "model.keras").exists()
