"""Every option defined once (`spec_impl.options`): `train`'s signature is `fit`'s plus the
loop's, the command line and `train_and_evaluate` read the same defaults, and a bad or
misspelt option is refused by name."""

import dataclasses
import inspect

import keras
import numpy as np
import pytest

from spec_impl import FitArguments, RunOptions, TrainOptions, train
from spec_impl.cli import build_parser
from spec_impl.options import COMPILE_ARGUMENTS, LOOP_OPTIONS, defaults
from spec_impl.trainer.engine import Trainer
from spec_impl.workflow import train_and_evaluate


def _keyword_defaults(fn, skip=()):
    return {name: p.default for name, p in inspect.signature(fn).parameters.items()
            if name not in ("self", *skip) and p.kind is not p.VAR_KEYWORD}


def test_train_takes_every_argument_of_fit_with_its_default():
    fit = _keyword_defaults(keras.Model.fit)
    ours = _keyword_defaults(train)
    assert {name: ours[name] for name in fit} == fit
    assert defaults(FitArguments) == {n: d for n, d in fit.items() if n not in ("x", "y")}


def test_train_shows_the_compile_arguments_and_every_option():
    parameters = inspect.signature(train).parameters
    assert list(parameters)[:3] == ["model", "x", "y"]
    assert all(parameters[name].default is None for name in COMPILE_ARGUMENTS)
    assert {name: parameters[name].default for name in defaults(TrainOptions)} == \
        defaults(TrainOptions)
    assert set(COMPILE_ARGUMENTS) < set(inspect.signature(keras.Model.compile).parameters)
    assert set(LOOP_OPTIONS) < set(defaults(TrainOptions))  # what Trainer.fit takes of them


def test_a_misspelt_option_is_refused_by_name():
    with pytest.raises(TypeError, match=r"^train\(\) got an unexpected keyword argument 'epoch'$"):
        train(keras.Sequential([keras.layers.Dense(1)]), [[0.0]], [0.0], epoch=2)
    with pytest.raises(TypeError, match=r"^fit\(\) got an unexpected keyword argument 'mode'$"):
        # the engine's options belong to the Trainer, made before `fit`
        Trainer(keras.Sequential([keras.layers.Dense(1)]), loss="mse").fit([[0.0]], [0.0],
                                                                           mode="xla")
    with pytest.raises(TypeError, match=r"unexpected keyword argument 'checkpoint_dir'"):
        train_and_evaluate("mnist_mlp", checkpoint_dir="elsewhere")  # always out/checkpoints


@pytest.mark.parametrize("field, bad, message", [
    ("mode", "jit", r"`mode` to be one of eager, function, xla, auto. Received: mode='jit'"),
    ("steps_per_execution", 0, r"positive integer for `steps_per_execution`"),
    ("on_nan", "ignore", r"`on_nan` to be one of stop, skip. Received: on_nan='ignore'"),
    ("max_skipped", 0, r"positive integer for `max_skipped`. Received: max_skipped=0"),
    ("checkpoint_every", -2, r"positive integer for `checkpoint_every`"),
    ("num_classes", 1.5, r"positive integer for `num_classes`. Received: num_classes=1.5"),
    ("recalibrate_bn", "yes", r"`recalibrate_bn` to be True or False. Received: "
                              r"recalibrate_bn='yes'"),
])
def test_bad_option_values_are_refused_when_the_options_are_made(field, bad, message):
    with pytest.raises(ValueError, match=message):
        TrainOptions(**{field: bad})


def test_numpy_integers_are_integers():
    # a class count computed with NumPy (`np.max(y) + 1`) is an integer, as Python's is
    options = TrainOptions(num_classes=np.int64(10), checkpoint_every=np.int32(3))
    assert options.num_classes == 10 and options.checkpoint_every == 3
    with pytest.raises(ValueError, match=r"positive integer for `num_classes`"):
        TrainOptions(num_classes=np.float64(10.0))


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainOptions().mode = "xla"


def test_the_command_line_reads_the_workflows_defaults():
    args = build_parser().parse_args(["train"])
    run = RunOptions()
    for name in ("model", "data", "out", "epochs", "batch_size", "learning_rate", "precision",
                 "resume", "limit", "seed", "strategy", "devices"):
        assert getattr(args, name) == getattr(run, name), name
    for name in ("mode", "steps_per_execution", "log_dir", "on_nan", "max_skipped",
                 "recalibrate_bn"):
        assert getattr(args, name) == getattr(run.training, name), name
    assert build_parser().parse_args(["train", "--no-recalibrate-bn"]).recalibrate_bn is False


def test_train_and_evaluate_shows_the_run_defaults():
    parameters = _keyword_defaults(train_and_evaluate)
    assert parameters["epochs"] == RunOptions.epochs == 5
    # the one default where the command departs from `train` (docs/training.md measures why)
    assert parameters["recalibrate_bn"] is True
    assert TrainOptions().recalibrate_bn is False
    assert "strategy" in parameters and parameters["strategy"] == "default"
