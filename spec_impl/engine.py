"""The custom training loop every document writes by hand, written once and tested.

epochs -> batches -> `GradientTape` -> loss (plus `model.losses`) -> gradients ->
`apply_gradients` -> metrics `update_state` / `result` / `reset_state`, compiled with
`tf.function` (or XLA) and logged to TensorBoard with `tf.summary`, driving Keras callbacks.

Corrections to the documents: `training=True` in the train step and `False` in the test step
(003's loop ignores it); validation scalars go to their own `validation/` writer (000 writes them
to the training writer); the regularization and `add_loss` terms are part of the loss.
"""

import keras
import numpy as np
import tensorflow as tf

from spec_impl.batchnorm import recalibrate_batch_norm
from spec_impl.checkpointing import TrainingCheckpoint
from spec_impl.progress import EpochProgress

MODES = ("eager", "function", "xla")


def as_dataset(data, batch_size, name="train_data"):
    """A batched `tf.data.Dataset` from a dataset or an `(x, y)` pair of arrays."""
    if isinstance(data, tf.data.Dataset):
        return data
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            f"Expected `{name}` to be a tf.data.Dataset or an (x, y) pair. "
            f"Received: {type(data).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected a positive integer batch_size. Received: batch_size={batch_size!r}")
    x, y = data
    # prefetch: the next batch is sliced while the current step runs.
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _relaxed_spec(spec):
    """The dataset's element spec with a free batch axis: one trace serves a partial batch too."""
    return tf.nest.map_structure(
        lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype, name=s.name), spec)


class _SumOfLosses:
    """One loss per output of a multi-output model, summed (as `compile` does with a list)."""

    def __init__(self, losses):
        self.losses = [as_loss(loss) for loss in losses]

    def __call__(self, y_true, y_pred):
        return tf.add_n([fn(t, p) for fn, t, p in zip(self.losses, y_true, y_pred)])


def as_loss(loss):
    """A `keras.losses.Loss` from an object, a name or a function (reduced as `compile` does);
    a list or tuple gives the sum of one loss per output."""
    if isinstance(loss, (list, tuple)):
        return _SumOfLosses(loss)
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if not callable(loss):
        raise ValueError(f"Expected a Keras loss, a loss name or a function. Received: loss={loss!r}")
    from keras.src.losses.losses import LossFunctionWrapper  # what `compile` wraps functions in

    return LossFunctionWrapper(loss, name=getattr(loss, "__name__", None))


def resolve_metric(metric, y_spec=None):
    """A metric object from an object or a name; `"accuracy"` as `compile` resolves it.

    Integer labels give `SparseCategoricalAccuracy`, one-hot labels `CategoricalAccuracy`,
    single-column float labels `BinaryAccuracy`; all named `accuracy`, as `fit` reports them.
    """
    if metric not in ("accuracy", "acc"):
        return keras.metrics.get(metric)
    if y_spec is None or y_spec.dtype.is_integer:
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if y_spec.shape.rank and y_spec.shape[-1] not in (None, 1):
        return keras.metrics.CategoricalAccuracy(name="accuracy")
    return keras.metrics.BinaryAccuracy(name="accuracy")


def _compile(fn, mode, signature):
    if mode == "eager":
        return fn
    return tf.function(fn, input_signature=signature, jit_compile=(mode == "xla"))


class Trainer:
    """The training engine: step functions, metrics, writers and the epoch loop.

    `train(...)` is the usual entry point; the benchmarks use `train_step` / `test_step`
    directly.

    Args:
        model: a Keras model.
        loss: a Keras loss (object, name or function).
        optimizer: a Keras optimizer (object or name).
        metrics: Keras metrics (objects or names) computed on training and validation data.
        mode: `"eager"`, `"function"` (`tf.function`) or `"xla"` (`tf.function(jit_compile=True)`).
        log_dir: where `train/` and `validation/` TensorBoard event files go, or `None`.
        element_spec: the batched dataset's element spec, fixing the traced signature.
    """

    def __init__(self, model, *, loss, optimizer, metrics=(), mode="function", log_dir=None,
                 element_spec=None):
        if mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}. Received: mode={mode!r}")
        self.model = model
        self.mode = mode
        self.loss_fn = as_loss(loss)
        self.optimizer = keras.optimizers.get(optimizer)
        y_spec = None if element_spec is None else element_spec[1]
        self.train_metrics = [resolve_metric(m, y_spec) for m in metrics]
        self.val_metrics = [type(m).from_config(m.get_config()) for m in self.train_metrics]
        self.train_loss = keras.metrics.Mean(name="loss")
        self.val_loss = keras.metrics.Mean(name="loss")
        self.val_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="val_step")
        self.train_writer = self.val_writer = None
        if log_dir is not None:
            self.train_writer = tf.summary.create_file_writer(f"{log_dir}/train")
            self.val_writer = tf.summary.create_file_writer(f"{log_dir}/validation")
        signature = None if element_spec is None else list(_relaxed_spec(element_spec))
        self.train_step = _compile(self._train_step, mode, signature)
        self.test_step = _compile(self._test_step, mode, signature)

    # ---- the two steps ----

    def _total_loss(self, y, predictions):
        loss = self.loss_fn(y, predictions)
        if self.model.losses:  # regularization and add_loss terms (document 003)
            loss = loss + tf.add_n(self.model.losses)
        return loss

    def _train_step(self, x, y):
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=True)
            loss = self._total_loss(y, predictions)
        variables = self.model.trainable_variables
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.train_loss.update_state(loss)
        for metric in self.train_metrics:
            metric.update_state(y, predictions)
        self._write_batch(self.train_writer, self.train_loss, self.train_metrics,
                          self.optimizer.iterations)
        return loss

    def _test_step(self, x, y):
        predictions = self.model(x, training=False)
        loss = self._total_loss(y, predictions)
        self.val_loss.update_state(loss)
        for metric in self.val_metrics:
            metric.update_state(y, predictions)
        self.val_step.assign_add(1)
        self._write_batch(self.val_writer, self.val_loss, self.val_metrics, self.val_step)
        return loss

    @staticmethod
    def _write_batch(writer, loss_metric, metrics, step):
        if writer is None:
            return
        with writer.as_default(step=step):
            tf.summary.scalar("batch_loss", loss_metric.result())
            for metric in metrics:
                tf.summary.scalar(f"batch_{metric.name}", metric.result())

    # ---- bookkeeping ----

    def logs(self, prefix=""):
        """Current running values: `{"loss": ..., "<metric>": ...}`, names prefixed."""
        loss, metrics = (self.val_loss, self.val_metrics) if prefix else (self.train_loss,
                                                                          self.train_metrics)
        out = {prefix + "loss": float(loss.result())}
        for metric in metrics:
            out[prefix + metric.name] = float(metric.result())
        return out

    def reset(self, validation=False):
        for metric in ([self.val_loss, *self.val_metrics] if validation
                       else [self.train_loss, *self.train_metrics]):
            metric.reset_state()

    def write_epoch(self, epoch, logs):
        """Per-epoch scalars: `epoch_<name>` at step `epoch`, validation names without `val_`."""
        for writer, prefix in ((self.train_writer, ""), (self.val_writer, "val_")):
            if writer is None:
                continue
            with writer.as_default(step=epoch):
                for name, value in logs.items():
                    if prefix == "val_" and name.startswith("val_"):
                        tf.summary.scalar("epoch_" + name[len("val_"):], value)
                    elif prefix == "" and not name.startswith("val_"):
                        tf.summary.scalar("epoch_" + name, value)
            writer.flush()

    def state_variables(self):
        """Variables to checkpoint besides the model's and the optimizer's."""
        metric_vars = [v for m in [self.train_loss, *self.train_metrics] for v in m.variables]
        return metric_vars + [self.val_step]

    def evaluate(self, dataset):
        """Run the test step over `dataset`; returns the `val_` logs."""
        self.reset(validation=True)
        for x, y in dataset:
            self.test_step(x, y)
        return self.logs(prefix="val_")


class History(dict):
    """`{"loss": [...], "val_loss": [...], ...}`, one value per epoch; `.trainer` is the engine."""

    trainer = None


def train(model, train_data, *, loss, optimizer, epochs=1, validation_data=None, metrics=(),
          mode="function", log_dir=None, checkpoint_dir=None, checkpoint_every=None,
          callbacks=(), verbose=1, batch_size=32, num_classes=None, recalibrate_bn=False):
    """Train `model` with the package's custom loop and return its history.

    Args:
        model: a Keras model (built or not).
        train_data: a batched `tf.data.Dataset` of `(x, y)`, or an `(x, y)` pair of arrays.
        loss: a Keras loss. Regularization and `add_loss` terms (`model.losses`) are added.
        optimizer: a Keras optimizer.
        epochs: number of epochs (in all, counting those of a resumed run).
        validation_data: like `train_data`, evaluated at the end of each epoch.
        metrics: Keras metrics, reported for training and (prefixed `val_`) validation.
        mode: `"eager"`, `"function"` or `"xla"`.
        log_dir: TensorBoard folder: `train/` and `validation/` get `batch_*` and `epoch_*` scalars.
        checkpoint_dir: if given, a `tf.train.CheckpointManager` there keeps the model, the
            optimizer, the metric totals and the epoch / step position, and a rerun resumes from
            the latest checkpoint.
        checkpoint_every: also checkpoint every this many steps (default: at the end of each epoch
            only).
        callbacks: Keras callbacks (`EarlyStopping`, `ModelCheckpoint`, `TensorBoard`, ...).
        verbose: 1 for a progress bar per epoch, 0 for silence.
        batch_size: batch size when data are arrays.
        num_classes: for integer labels, refuse labels outside `[0, num_classes)` before the
            first step (default: the model's output width when the loss is sparse).
        recalibrate_bn: at the end of each epoch, before validation, set every batch norm's
            moving statistics to their average over the epoch's training batches
            (`spec_impl.batchnorm`); fixes inference accuracy after short runs.

    Returns:
        A `History` dict of lists, one value per epoch: `loss`, each metric, and `val_`
        versions; its `trainer` attribute holds the step functions.

    Raises:
        ValueError: a bad `mode`, data the model cannot take, or labels out of range (before
            the first step).
        FloatingPointError: a non-finite loss; no checkpoint is written after it.
    """
    from spec_impl.checks import check_training_inputs

    train_ds = as_dataset(train_data, batch_size)
    val_ds = None if validation_data is None else as_dataset(validation_data, batch_size,
                                                              "validation_data")
    check_training_inputs(model, train_ds, loss, num_classes)
    if val_ds is not None:
        check_training_inputs(model, val_ds, loss, num_classes)
    trainer = Trainer(model, loss=loss, optimizer=optimizer, metrics=metrics, mode=mode,
                      log_dir=log_dir, element_spec=train_ds.element_spec)
    trainer.optimizer.build(model.trainable_variables)
    if getattr(model, "optimizer", None) is not trainer.optimizer:
        model.optimizer = trainer.optimizer  # for callbacks that read model.optimizer
    ckpt = None if checkpoint_dir is None else TrainingCheckpoint(checkpoint_dir, trainer)
    start_epoch, start_step = (0, 0) if ckpt is None else ckpt.restore_latest()

    steps = int(train_ds.cardinality())
    steps = steps if steps > 0 else None
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
        for step, (x, y) in enumerate(train_ds.skip(skip), start=skip):
            callback_list.on_train_batch_begin(step)
            loss_value = float(trainer.train_step(x, y))
            if not np.isfinite(loss_value):
                where = "" if ckpt is None else f"; the last good checkpoint is {ckpt.latest}"
                raise FloatingPointError(
                    f"Non-finite loss {loss_value} at epoch {epoch + 1}, step {step + 1}: "
                    f"training stopped, no checkpoint written after it{where}"
                )
            logs = trainer.logs()
            progress.update(step + 1, logs)
            callback_list.on_train_batch_end(step, logs)
            if ckpt is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                ckpt.save(epoch, step + 1)
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
