"""`train`: `Trainer(...).fit(...)` in one call, taking what `model.compile` + `model.fit` take."""

import contextlib
import dataclasses
import inspect

from spec_impl.options import (
    COMPILE_ARGUMENTS,
    FitArguments,
    TrainOptions,
    defaults,
    field_names,
    signature,
    split,
)
from spec_impl.trainer.distribute import chief_path, strategy_or_none
from spec_impl.trainer.engine import Trainer


def train(model, x=None, y=None, **arguments):
    """Train `model` with the package's custom loop, as `model.compile(...)` + `model.fit(...)`.

    Every argument of `fit` has its name and meaning here, and `compile`'s `optimizer`, `loss`,
    `metrics`, `loss_weights` and `weighted_metrics` are resolved by `compile` itself (without
    them an already compiled model keeps its own). A model that overrides `train_step` or
    `test_step` trains with its own step, as under `fit` (`on_nan="skip"` is refused for it).
    What the loop adds (`spec_impl.options.TrainOptions`, where each is defined once with its
    default and its check; a misspelt name raises `TypeError`, as a function's would):

    Args:
        mode: `"eager"`, `"function"`, `"xla"` (the numeric step compiled with XLA; summaries
            and checks outside it; with k > 1, k full batches in XLA programs of up to 8
            unrolled steps) or `"auto"` (`spec_impl.trainer.auto`: the first steps time
            `"function"` and `"xla"`, the rest of the run takes the faster).
        steps_per_execution: batches per compiled call (a loop inside the `tf.function` over a
            dataset iterator, as `fit` does); the last call of an epoch may run fewer. Batch
            callbacks run once per call, as under `fit(steps_per_execution=k)`. `"auto"`: the
            first steps time 1, 8 and 32, the rest of the run takes the fastest. The choice
            is in `history.params["execution"]`, on the progress output, in TensorBoard's text
            summary `execution` and in `checkpoint_dir/execution.json` (a resumed run keeps
            it); every calibration step is a real training step.
        log_dir: TensorBoard folder: `train/` and `validation/` get `batch_*` scalars at every
            step (written inside the compiled call) and `epoch_*` scalars.
        checkpoint_dir: if given, a `tf.train.CheckpointManager` there keeps the model, the
            optimizer, the metric totals and the epoch / step position, and a rerun resumes from
            the latest checkpoint, mid-epoch included (exact when the batches come in a fixed
            order: `shuffle=False` or an unshuffled dataset).
        checkpoint_every: also checkpoint every this many steps (default: at the end of each epoch
            only); with `steps_per_execution` k, at the end of the call that reaches it.
        num_classes: for integer labels of a sparse loss, refuse labels outside
            `[0, num_classes)` before the first step (default: the model's output width).
        recalibrate_bn: at the end of each epoch, before validation, set every batch norm's
            moving statistics to their average over the epoch's training batches
            (`spec_impl.trainer.batchnorm`); fixes inference accuracy after short runs.
        strategy: a `tf.distribute.Strategy` (`spec_impl.make_strategy`) in whose scope the
            model was built, or `None`. The steps then run per replica on the distributed
            datasets, with the loss of the global batch (exact on an uneven last batch, where
            `fit` is not); on a multi-worker cluster only the chief keeps `log_dir` and
            checkpoints (the other workers write to temporary folders, removed), and all resume
            from the chief's.
        on_nan: `"stop"`: a step with a non-finite loss or gradient stops the run
            (`FloatingPointError`). `"skip"`: its update is not applied (weights and optimizer
            state stay as before it), it is left out of the epoch's loss and metrics, a
            `RuntimeWarning` names its epoch and step, and the run stops as under `"stop"` after
            `max_skipped` consecutive skipped steps.
        max_skipped: see `on_nan` (default 10).

    Faults (`docs/faults.md`):
        - `SIGTERM` (preemption) or `SIGINT` (Ctrl-C): the compiled call in flight finishes, a
          checkpoint is written at that step (with `checkpoint_dir`) and `TrainingPreempted` is
          raised; a rerun resumes from it, bit-identical to an uninterrupted run. On a cluster
          every worker stops at the same step.
        - `checkpoint_dir` is locked for the run (an `flock` on `spec_impl.lock` there, which
          names the owner's pid and host): a second run on it raises `CheckpointFolderLocked`;
          a lock whose process has ended is taken over with a warning.
        - Checkpoints are found by their files: a lost index is rebuilt with a warning, a
          latest checkpoint that cannot be read is skipped with a warning and the newest
          readable one restored; one trained with another optimizer, precision, model or
          (mid-epoch) batch size raises `CheckpointMismatchError`; a new learning rate is
          applied with a warning. A checkpoint that cannot be written raises
          `CheckpointWriteError`, and the previous one stays the latest.

    Returns:
        A `keras.callbacks.History` (`history.history`: one value per epoch of `loss`, each
        metric, and their `val_` versions), also set as `model.history`, as `fit` returns.

    Raises:
        ValueError: a bad `mode`, `steps_per_execution` or `steps_per_epoch`, a repeated dataset
            without `steps_per_epoch`, data the model cannot take, labels out of range, or a
            model built outside `strategy`'s scope (all before the first step).
        FloatingPointError: a non-finite loss or gradient (checked inside the compiled call; a
            step with a non-finite gradient reports its loss as nan), or non-finite weights
            after an update (under `on_nan="skip"` too); no checkpoint is written after it.
        TrainingPreempted: `SIGTERM` or `SIGINT` was received (see above).
    """
    compiling, fitting, options = split(arguments, COMPILE_ARGUMENTS, field_names(FitArguments),
                                        field_names(TrainOptions), caller="train")
    options = TrainOptions(**options)
    strategy = strategy_or_none(options.strategy)
    with contextlib.ExitStack() as stack:  # a non-chief worker's folder is removed at the end
        log_dir = stack.enter_context(chief_path(options.log_dir, strategy))
        options = dataclasses.replace(options, log_dir=log_dir, strategy=strategy)
        return Trainer(model, options=options, **compiling).fit(x, y, **fitting)


# What `help(train)` and editors show: fit's arguments with fit's defaults, compile's, and the
# options the loop adds, each defined once in `spec_impl.options`.
train.__signature__ = signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                       default=inspect.Parameter.empty if name == "model" else None)
     for name in ("model", "x", "y")],
    defaults(FitArguments), dict.fromkeys(COMPILE_ARGUMENTS), defaults(TrainOptions))
