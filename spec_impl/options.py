"""Every option of `train`, `Trainer`, `train_and_evaluate` and `spec-impl train`, defined once:
its name, its default and its check.

- `FitArguments`: what `keras.Model.fit` takes besides the data, with fit's defaults (`train` is
  a drop-in for `fit`).
- `COMPILE_ARGUMENTS`: what `train` passes on to `model.compile`.
- `TrainOptions`: what `train` adds to `compile` and `fit` (execution mode, TensorBoard,
  checkpoints, `tf.distribute`, the NaN policy), frozen and checked when made.
- `RunOptions`: what `train_and_evaluate` and `spec-impl train` add (model, dataset, output
  folder, optimizer settings, precision) and the `TrainOptions` they train with.

This module imports neither TensorFlow nor Keras: the command line reads its defaults before
TensorFlow starts.
"""

import dataclasses
import inspect

from spec_impl._validation import MODES, check_positive_int

AUTO = "auto"  # mode / steps_per_execution chosen by timing the first steps (trainer.auto)
ON_NAN = ("stop", "skip")
COMPILE_ARGUMENTS = ("optimizer", "loss", "metrics", "loss_weights", "weighted_metrics")
# `on_nan="skip"` stops after this many consecutive skipped steps by default: a few bad batches
# are survivable, a run of them means the model itself has diverged.
MAX_SKIPPED = 10


@dataclasses.dataclass(frozen=True)
class FitArguments:
    """What `keras.Model.fit` takes besides `x` and `y`, with its defaults."""

    batch_size: int = None
    epochs: int = 1
    verbose: object = "auto"
    callbacks: list = None
    validation_split: float = 0.0
    validation_data: object = None
    shuffle: bool = True
    class_weight: dict = None
    sample_weight: object = None
    initial_epoch: int = 0
    steps_per_epoch: int = None
    validation_steps: int = None
    validation_batch_size: int = None
    validation_freq: object = 1


def _optional_positive_int(name, value):
    return value if value is None else check_positive_int(name, value)


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """What `train` adds to `compile` + `fit` (see `spec_impl.train` for each one's meaning).

    The first six configure the engine (`Trainer`); the last four, its epoch loop.
    """

    mode: str = "function"
    steps_per_execution: object = 1
    log_dir: str = None
    strategy: object = None
    on_nan: str = "stop"
    max_skipped: int = MAX_SKIPPED
    checkpoint_dir: str = None
    checkpoint_every: int = None
    num_classes: int = None
    recalibrate_bn: bool = False

    def __post_init__(self):
        if self.mode not in (*MODES, AUTO):
            raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}, {AUTO}. "
                             f"Received: mode={self.mode!r}")
        if self.steps_per_execution != AUTO:
            check_positive_int("steps_per_execution", self.steps_per_execution)
        if self.on_nan not in ON_NAN:
            raise ValueError(f"Expected `on_nan` to be one of {', '.join(ON_NAN)}. "
                             f"Received: on_nan={self.on_nan!r}")
        check_positive_int("max_skipped", self.max_skipped)
        _optional_positive_int("checkpoint_every", self.checkpoint_every)
        _optional_positive_int("num_classes", self.num_classes)
        if not isinstance(self.recalibrate_bn, bool):
            raise ValueError(f"Expected `recalibrate_bn` to be True or False. "
                             f"Received: recalibrate_bn={self.recalibrate_bn!r}")


# The `TrainOptions` the epoch loop reads (`Trainer.fit` takes them with fit's arguments); the
# others configure the engine (`Trainer`).
LOOP_OPTIONS = ("checkpoint_dir", "checkpoint_every", "num_classes", "recalibrate_bn")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What `train_and_evaluate` (`spec-impl train`) adds: the run's model, data and folders.

    Its `training` options differ from `train`'s in one default: batch norm is recalibrated
    after each epoch. `train` leaves it off, as `fit` does; the command trains MiniInception's 19
    batch norms for a few epochs, where the moving averages still lag the weights (measured in
    `docs/training.md`: 0.997 test accuracy with it, 0.10 without).
    """

    model: str = "mini_inception"
    data: str = "digits"
    out: str = "runs/latest"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    precision: str = "float32"
    resume: bool = False
    limit: int = None
    seed: int = 0
    verbose: int = 1
    strategy: object = "default"
    devices: int = None
    training: TrainOptions = TrainOptions(recalibrate_bn=True)
    # model, data, precision and strategy are checked by `train_and_evaluate`, which knows the
    # registry's models and the datasets


def field_names(cls):
    """The field names of the dataclass `cls`, in order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def defaults(cls):
    """`{field name: default}` of the dataclass `cls`."""
    return {f.name: f.default for f in dataclasses.fields(cls)}


def split(received, *groups, caller):
    """`received` (keyword arguments) divided among `groups` (tuples of names), one dict per
    group; a name in none of them raises `TypeError` naming it, as Python does."""
    parts = [{} for _ in groups]
    for name, value in received.items():
        for names, part in zip(groups, parts, strict=True):
            if name in names:
                part[name] = value
                break
        else:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")
    return parts


def signature(leading, *groups):
    """An `inspect.Signature` of `leading` parameters followed by the keyword-only parameters
    `groups` (`{name: default}` each): what `help()` and editors show for a function that takes
    `**options`."""
    keyword = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for group in groups for name, default in group.items()]
    return inspect.Signature([*leading, *keyword])


def values(options):
    """`{field name: value}` of the dataclass instance `options`, shallow (a strategy object is
    passed on as it is, where `dataclasses.asdict` would copy it)."""
    return {name: getattr(options, name) for name in field_names(type(options))}
