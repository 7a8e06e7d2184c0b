"""`train`: the custom training loop every document writes by hand, epoch by epoch.

Epochs -> calls of `Trainer.train_function` (k steps each) -> Keras callbacks, a progress bar,
TensorBoard epoch scalars, checkpoints (resumed from), batch-norm recalibration, validation.
"""

import contextlib

import keras
import tensorflow as tf

from spec_impl.batchnorm import recalibrate_batch_norm
from spec_impl.checkpointing import TrainingCheckpoint
from spec_impl.compile_utils import as_dataset
from spec_impl.distribute import check_created_in_scope, chief_path, explicit
from spec_impl.engine import NON_FINITE, Trainer, dataset_steps
from spec_impl.progress import EpochProgress


class History(dict):
    """`{"loss": [...], "val_loss": [...], ...}`, one value per epoch; `.trainer` is the engine."""

    trainer = None


def train(model, train_data, *, loss, optimizer, epochs=1, validation_data=None, metrics=(),
          mode="function", log_dir=None, checkpoint_dir=None, checkpoint_every=None,
          callbacks=(), verbose=1, batch_size=32, num_classes=None, recalibrate_bn=False,
          steps_per_execution=1, strategy=None):
    """Train `model` with the package's custom loop and return its history.

    Args:
        model: a Keras model (built or not). Under a `mixed_float16` policy the optimizer is
            wrapped in `keras.optimizers.LossScaleOptimizer`, as `compile` does.
        train_data: a batched `tf.data.Dataset` of `(x, y)`, or an `(x, y)` pair of arrays.
        loss: a Keras loss. Regularization and `add_loss` terms (`model.losses`) are added.
        optimizer: a Keras optimizer.
        epochs: number of epochs (in all, counting those of a resumed run).
        validation_data: like `train_data`, evaluated at the end of each epoch.
        metrics: Keras metrics, reported for training and (prefixed `val_`) validation.
        mode: `"eager"`, `"function"` or `"xla"` (the numeric step compiled with XLA; summaries
            and checks outside it).
        log_dir: TensorBoard folder: `train/` and `validation/` get `batch_*` and `epoch_*` scalars.
        checkpoint_dir: if given, a `tf.train.CheckpointManager` there keeps the model, the
            optimizer, the metric totals and the epoch / step position, and a rerun resumes from
            the latest checkpoint.
        checkpoint_every: also checkpoint every this many steps (default: at the end of each epoch
            only); with `steps_per_execution` k, at the end of the call that reaches it.
        callbacks: Keras callbacks (`EarlyStopping`, `ModelCheckpoint`, `TensorBoard`, ...).
            As under `fit(steps_per_execution=k)`, batch hooks run once per call of k steps:
            `on_train_batch_begin(first step)` and `on_train_batch_end(last step, logs)`.
        verbose: 1 for a progress bar per epoch, 0 for silence.
        batch_size: batch size when data are arrays.
        num_classes: for integer labels, refuse labels outside `[0, num_classes)` before the
            first step (default: the model's output width when the loss is sparse).
        recalibrate_bn: at the end of each epoch, before validation, set every batch norm's
            moving statistics to their average over the epoch's training batches
            (`spec_impl.batchnorm`); fixes inference accuracy after short runs.
        steps_per_execution: batches per compiled call (a loop inside the `tf.function` over a
            dataset iterator, as `fit` does); the last call of an epoch may run fewer.
        strategy: a `tf.distribute.Strategy` (`spec_impl.make_strategy`) in whose scope the
            model was built, or `None`. The steps then run per replica on the distributed
            datasets, with the loss of the global batch (`spec_impl.distribute`); on a
            multi-worker cluster only the chief keeps `log_dir` and checkpoints (the other
            workers write to temporary folders, removed), and all resume from the chief's.

    Returns:
        A `History` dict of lists, one value per epoch: `loss`, each metric, and `val_`
        versions; its `trainer` attribute holds the step functions.

    Raises:
        ValueError: a bad `mode` or `steps_per_execution`, data the model cannot take, labels
            out of range, or a model built outside `strategy`'s scope (before the first step).
        FloatingPointError: a non-finite loss or gradient (checked inside the compiled call; a
            step with a non-finite gradient reports its loss as nan); no checkpoint is written
            after it.
    """
    strategy = explicit(strategy)
    with contextlib.ExitStack() as stack:  # a non-chief worker's folders are removed at the end
        log_dir = stack.enter_context(chief_path(log_dir, strategy))
        write_dir = stack.enter_context(chief_path(checkpoint_dir, strategy))
        return _train(model, train_data, loss, optimizer, epochs, validation_data, metrics, mode,
                      log_dir, checkpoint_dir, write_dir, checkpoint_every, callbacks, verbose,
                      batch_size, num_classes, recalibrate_bn, steps_per_execution, strategy)


def _train(model, train_data, loss, optimizer, epochs, validation_data, metrics, mode, log_dir,
           checkpoint_dir, write_dir, checkpoint_every, callbacks, verbose, batch_size,
           num_classes, recalibrate_bn, steps_per_execution, strategy):
    from spec_impl.checks import check_training_inputs

    train_ds = as_dataset(train_data, batch_size)
    val_ds = None if validation_data is None else as_dataset(validation_data, batch_size,
                                                              "validation_data")
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        check_training_inputs(model, train_ds, loss, num_classes)  # builds an unbuilt model
        if val_ds is not None:
            check_training_inputs(model, val_ds, loss, num_classes)
    if strategy is not None:
        check_created_in_scope(model, strategy)
    trainer = Trainer(model, loss=loss, optimizer=optimizer, metrics=metrics, mode=mode,
                      log_dir=log_dir, element_spec=train_ds.element_spec,
                      steps_per_execution=steps_per_execution, strategy=strategy)
    with trainer.scope():
        trainer.optimizer.build(model.trainable_variables)
    if getattr(model, "optimizer", None) is not trainer.optimizer:
        model.optimizer = trainer.optimizer  # for callbacks that read model.optimizer
    ckpt = None if checkpoint_dir is None else TrainingCheckpoint(checkpoint_dir, trainer,
                                                                  write_directory=write_dir)
    start_epoch, start_step = (0, 0) if ckpt is None else ckpt.restore_latest()

    steps = dataset_steps(train_ds)
    callback_list = keras.callbacks.CallbackList(list(callbacks), model=model, epochs=epochs,
                                                 steps=steps, verbose=verbose)
    history = History()
    history.trainer = trainer
    model.stop_training = False
    callback_list.on_train_begin()
    for epoch in range(start_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        skip = start_step if epoch == start_epoch else 0
        if skip == 0:
            trainer.reset()
        progress = EpochProgress(epoch, epochs, steps, verbose)
        _run_epoch(trainer, train_ds, epoch, skip, steps, progress, callback_list, ckpt,
                   checkpoint_every)
        epoch_logs = trainer.logs()
        if recalibrate_bn:
            recalibrate_batch_norm(model, train_ds)
        if val_ds is not None:
            callback_list.on_test_begin()
            epoch_logs.update(trainer.evaluate(val_ds))
            callback_list.on_test_end(epoch_logs)
        progress.finish(epoch_logs)
        trainer.write_epoch(epoch, epoch_logs)
        for name, value in epoch_logs.items():
            history.setdefault(name, []).append(value)
        if ckpt is not None:
            ckpt.save(epoch + 1, 0)
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end({k: v[-1] for k, v in history.items()})
    return history


def _run_epoch(trainer, dataset, epoch, skip, steps, progress, callback_list, ckpt, every):
    """One epoch of calls of `trainer.train_function`, from step `skip` on.

    The host reads nothing from the device per call when the epoch's length is known: the
    logs stay tensors (callbacks convert them, as under `fit`), and the progress bar reads
    them only when it redraws.
    """
    k = trainer.steps_per_execution
    iterator = trainer.iterator(dataset, skip)
    first_count = int(trainer.train_counter.numpy())
    step = skip
    while steps is None or step < steps:
        callback_list.on_train_batch_begin(step)
        try:
            done, logs = trainer.train_function(iterator)
        except tf.errors.InvalidArgumentError as error:
            if NON_FINITE not in error.message:
                raise
            failed = skip + int(trainer.train_counter.numpy()) - first_count
            where = "" if ckpt is None else f"; the last good checkpoint is {ckpt.latest}"
            raise FloatingPointError(
                f"Non-finite loss {float(trainer.last_loss.numpy())} at epoch {epoch + 1}, "
                f"step {failed}: training stopped, no checkpoint written after it{where}"
            ) from None
        ran = min(k, steps - step) if steps is not None else int(done)
        if ran == 0:
            break
        previous, step = step, step + ran
        progress.update(step, trainer.logs)
        callback_list.on_train_batch_end(step - 1, logs)
        if ckpt is not None and every and step // every > previous // every:
            ckpt.save(epoch, step)
        if ran < k or trainer.model.stop_training:
            break
