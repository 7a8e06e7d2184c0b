"""`train_and_evaluate`: what `spec-impl train` does, as one library call.

Load the data, build the registry's model under a precision policy, train it with the package's
loop (checkpoints, TensorBoard, resume), save it atomically, and evaluate it on the test split.
"""

import contextlib
import dataclasses
import inspect
import os
from dataclasses import dataclass

import keras
import numpy as np

from spec_impl.data import class_names, load_dataset
from spec_impl.evaluation import evaluate_classifier
from spec_impl.options import RunOptions, TrainOptions, field_names, signature, split, values
from spec_impl.precision import check_policy, global_policy
from spec_impl.registry import classifier_names, get_model_spec
from spec_impl.saving import check_finite_weights, remove_stale_temporaries, save_model_atomic
from spec_impl.trainer.checkpointing import has_checkpoints
from spec_impl.trainer.distribute import chief_path, make_strategy, strategy_or_none
from spec_impl.trainer.loop import train


@dataclass
class RunResult:
    """What `train_and_evaluate` produced.

    Attributes:
        model: the trained Keras model.
        history: the `keras.callbacks.History` that `train` returned (`history.history` is
            empty when a resumed run had nothing left to train).
        model_path: where the `.keras` file was written (`None` on a non-chief worker).
        evaluation: `evaluate_classifier`'s dict (`report`, `accuracy`, `roc_auc_ovr`, ...).
        checkpoint_dir: the run's checkpoint folder.
    """

    model: keras.Model
    history: keras.callbacks.History
    model_path: str
    evaluation: dict
    checkpoint_dir: str


def _class_count(data, *labels):
    """The number of classes, `max(label) + 1`, refused before a model is built when it cannot
    be right: a negative label, or more classes than samples (one stray label of 10**7 would
    build a ten-million-wide output layer)."""
    labels = np.concatenate(labels)
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high + 1 > len(labels):
        raise ValueError(f"data={data!r}: labels range over {low}..{high}, which would make "
                         f"{high + 1} classes for {len(labels)} samples. Expected class ids "
                         f"0..C-1 with C at most the number of samples.")
    return high + 1


# The `TrainOptions` a run may set: the workflow itself gives `train` its strategy and its
# checkpoint folder (`out/checkpoints`).
_TRAINING = tuple(n for n in field_names(TrainOptions) if n not in ("strategy", "checkpoint_dir"))
_RUN = tuple(n for n in field_names(RunOptions) if n not in ("model", "data", "training"))


def train_and_evaluate(model=RunOptions.model, data=RunOptions.data, **options):
    """Train a registered classifier on an image dataset and evaluate it; `spec-impl train`.

    Args:
        model: a classifier name of the registry (`spec-impl summary` lists them).
        data: `"digits"` (embedded), `"mnist"`, `"fashion_mnist"`, `"cifar10"` (local Keras cache)
            or an `.npz` path (see `load_dataset`).
        out: folder for `model.keras`, `report.txt`, `confusion_matrix.png` and `checkpoints/`.
        epochs, batch_size, learning_rate: training settings (Adam).
        verbose: passed to `train`.
        mode, steps_per_execution, log_dir, on_nan, max_skipped, checkpoint_every, num_classes,
            recalibrate_bn: `TrainOptions`, passed to `train`; the defaults are
            `RunOptions.training`'s, which recalibrate batch norm (`spec_impl.options`).
        precision: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`: the dtype policy the
            model is built under.
        resume: continue from the checkpoints in `out` (without it, existing checkpoints are an
            error, so that a finished run is never overwritten by accident).
        limit: use only the first `limit` training samples.
        seed: the seed of Keras, TensorFlow, NumPy and Python.
        strategy: `"default"`, `"mirrored"` or `"multiworker"` (`spec_impl.make_strategy`; the
            cluster from `TF_CONFIG`), or a `tf.distribute.Strategy`. The model is built in its
            scope; on a multi-worker cluster only the chief writes into `out`.
        devices: replicas of `"mirrored"`.

    Every default is `spec_impl.options.RunOptions`'s.

    Returns:
        A `RunResult`.

    Raises:
        ValueError: an unknown model, dataset, precision or strategy, or checkpoints of an
            earlier run in `out` without `resume`.
        RuntimeError: more mirrored CPU devices than TensorFlow was initialised with.
        FileNotFoundError: a dataset file that does not exist.
        TrainingPreempted, CheckpointFolderLocked, FloatingPointError, ...: as `train` raises
            them (`docs/faults.md`).
    """
    run, training = split(options, _RUN, _TRAINING, caller="train_and_evaluate")
    run = RunOptions(model, data, **run, training=dataclasses.replace(RunOptions.training, **training))
    valid = classifier_names()
    if model not in valid:
        raise ValueError(f"unknown model {model!r}. Valid models: {', '.join(valid)}")
    check_policy(run.precision)
    strategy = run.strategy
    if isinstance(strategy, str):
        strategy = make_strategy(strategy, run.devices)
    strategy = strategy_or_none(strategy)
    checkpoint_dir = os.path.join(run.out, "checkpoints")
    if not run.resume and has_checkpoints(checkpoint_dir):
        raise ValueError(f"{checkpoint_dir} holds checkpoints of an earlier run. Pass "
                         f"--resume to continue it, or choose another --out.")
    spec = get_model_spec(model)
    (x_train, y_train), (x_test, y_test) = load_dataset(data, input_shape=spec.input_shape)
    if run.limit:
        x_train, y_train = x_train[:run.limit], y_train[:run.limit]
    keras.utils.set_random_seed(run.seed)
    num_classes = _class_count(data, y_train, y_test)
    scope = contextlib.nullcontext() if strategy is None else strategy.scope()
    with global_policy(run.precision), scope:  # the model keeps its policy after the block
        net = spec.build(spec.input_shape, num_classes)
        optimizer = keras.optimizers.Adam(run.learning_rate)
    training = dataclasses.replace(run.training, strategy=strategy, checkpoint_dir=checkpoint_dir)
    # shuffle=False: a fixed batch order, so that a run resumed mid-epoch equals an
    # uninterrupted one.
    history = train(net, x_train, y_train, shuffle=False, loss=spec.training_loss(),
                    optimizer=optimizer, epochs=run.epochs, validation_data=(x_test, y_test),
                    metrics=["accuracy"], batch_size=run.batch_size, verbose=run.verbose,
                    **values(training))
    out = run.out
    with chief_path(out, strategy) as folder:  # a non-chief worker's copy is removed
        os.makedirs(folder, exist_ok=True)
        remove_stale_temporaries(folder)  # of saves killed midway
        check_finite_weights(net, "not saved")
        model_path = save_model_atomic(net, os.path.join(folder, "model.keras"))
        names = list(class_names(data, num_classes))
        evaluation = evaluate_classifier(net, x_test, y_test, class_names=names, out_dir=folder)
    if folder != out:
        model_path = None  # this worker's copy is gone; the chief's is in `out`
    return RunResult(net, history, model_path, evaluation, checkpoint_dir)


train_and_evaluate.__signature__ = signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default)
     for name, default in (("model", RunOptions.model), ("data", RunOptions.data))],
    {n: getattr(RunOptions, n) for n in _RUN},
    {n: getattr(RunOptions.training, n) for n in _TRAINING})
