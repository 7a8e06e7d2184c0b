"""The custom training loop every document writes by hand, written once and tested.

epochs -> batches -> `GradientTape` -> loss (plus `model.losses`) -> gradients ->
`apply_gradients` -> metrics `update_state` / `result` / `reset_state`, compiled with
`tf.function` (or XLA) and logged to TensorBoard with `tf.summary`, driving Keras callbacks.

Corrections to the documents: `training=True` in the train step and `False` in the test step
(003's loop ignores it); validation scalars go to their own `validation/` writer (000 writes them
to the training writer); the regularization and `add_loss` terms are part of the loss.
"""

import keras
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from spec_impl._validation import check_positive_int
from spec_impl.batchnorm import recalibrate_batch_norm
from spec_impl.checkpointing import TrainingCheckpoint
from spec_impl.precision import needs_loss_scaling
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
    # prefetch: the next batch is sliced while the current step runs. Slicing and batching have
    # nothing to tune, and tf.data's autotuning, on by default, stalls the steps of a CPU-bound
    # model on a small machine (benchmarks/README: MiniInception's step +20% on 2 cores).
    return (tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
            .prefetch(PREFETCH_BATCHES).with_options(untuned_options()))


PREFETCH_BATCHES = 2


def untuned_options():
    """`tf.data.Options` with autotuning off, for input pipelines that only slice and batch."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


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


def _batch_size(x):
    """The running loss is weighted by batch size, as under `fit`: an epoch's loss is the mean
    over its samples, so a partial last batch counts for what it holds."""
    return tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)


def _scalar(tag, value):
    """`tf.summary.scalar` under exactly `tag`, whatever name scope (AutoGraph's `while/cond`
    inside a multi-step loop) is current."""
    tf.summary.write(tag, tf.cast(value, tf.float32), metadata=_SCALAR_METADATA)


_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)
NON_FINITE = "spec_impl: non-finite loss"  # the message of the in-graph finiteness check


class Trainer:
    """The training engine: step functions, metrics, writers.

    Two levels, as in `fit`: `train_step(x, y)` is the numeric step (forward, loss, gradients,
    update, metrics), compiled with XLA in `"xla"` mode; `train_function(iterator)` runs up to
    `steps_per_execution` of them in one call, checks each loss is finite and writes the batch
    summaries, and is compiled with `tf.function` but never with XLA (XLA has no kernel for
    summary writes). It returns the number of steps run and the running logs as tensors, so the
    caller needs no host synchronisation per step. `test_step` / `test_function` likewise.

    Under a `mixed_float16` model the optimizer is wrapped in `LossScaleOptimizer` (unless it is
    one already), as `Model.compile` does: the loss is scaled before the gradients and the
    gradients are unscaled before the update.

    Args:
        model: a Keras model.
        loss: a Keras loss (object, name or function).
        optimizer: a Keras optimizer (object or name).
        metrics: Keras metrics (objects or names) computed on training and validation data.
        mode: `"eager"`, `"function"` (`tf.function`) or `"xla"` (`tf.function(jit_compile=True)`).
        log_dir: where `train/` and `validation/` TensorBoard event files go, or `None`.
        element_spec: the batched dataset's element spec, fixing the traced signature.
        steps_per_execution: batches per call of `train_function` / `test_function`.
    """

    def __init__(self, model, *, loss, optimizer, metrics=(), mode="function", log_dir=None,
                 element_spec=None, steps_per_execution=1):
        if mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}. Received: mode={mode!r}")
        self.model = model
        self.mode = mode
        self.steps_per_execution = check_positive_int("steps_per_execution", steps_per_execution)
        self.loss_fn = as_loss(loss)
        optimizer = keras.optimizers.get(optimizer)
        if needs_loss_scaling(model) and not isinstance(optimizer,
                                                        keras.optimizers.LossScaleOptimizer):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.optimizer = optimizer
        y_spec = None if element_spec is None else element_spec[1]
        self.train_metrics = [resolve_metric(m, y_spec) for m in metrics]
        self.val_metrics = [type(m).from_config(m.get_config()) for m in self.train_metrics]
        self.train_loss = keras.metrics.Mean(name="loss")
        self.val_loss = keras.metrics.Mean(name="loss")
        # Steps run so far (the TensorBoard step); not `optimizer.iterations`, which a loss-scale
        # optimizer does not advance on a skipped step.
        self.train_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        self.val_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="val_step")
        self.last_loss = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="last_loss")
        self.train_writer = self.val_writer = None
        if log_dir is not None:
            self.train_writer = tf.summary.create_file_writer(f"{log_dir}/train")
            self.val_writer = tf.summary.create_file_writer(f"{log_dir}/validation")
        signature = None if element_spec is None else list(_relaxed_spec(element_spec))
        self.train_step = _compile(self._train_step, mode, signature)
        self.test_step = _compile(self._test_step, mode, signature)
        self.train_function = self._loop(self.train_step, self._after_train_step,
                                         self.train_loss, self.train_metrics)
        self.test_function = self._loop(self.test_step, self._after_test_step,
                                        self.val_loss, self.val_metrics)

    # ---- the numeric steps ----

    def _total_loss(self, y, predictions):
        loss = self.loss_fn(y, predictions)
        if self.model.losses:  # regularization and add_loss terms (document 003)
            loss = loss + tf.add_n([tf.cast(term, loss.dtype) for term in self.model.losses])
        return loss

    def _train_step(self, x, y):
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=True)
            loss = self._total_loss(y, predictions)
            scaled = self.optimizer.scale_loss(loss)  # the identity unless loss scaling
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))  # unscales first
        self.train_loss.update_state(loss, sample_weight=_batch_size(x))
        for metric in self.train_metrics:
            metric.update_state(y, predictions)
        return loss

    def _test_step(self, x, y):
        predictions = self.model(x, training=False)
        loss = self._total_loss(y, predictions)
        self.val_loss.update_state(loss, sample_weight=_batch_size(x))
        for metric in self.val_metrics:
            metric.update_state(y, predictions)
        return loss

    # ---- several steps per call, checks and summaries (never inside XLA) ----

    def _after_train_step(self, loss):
        self.train_counter.assign_add(1)
        self.last_loss.assign(tf.cast(loss, tf.float32))
        tf.debugging.Assert(tf.math.is_finite(loss), [NON_FINITE])
        self._write_batch(self.train_writer, self.train_loss, self.train_metrics,
                          self.train_counter)

    def _after_test_step(self, loss):
        self.val_step.assign_add(1)
        self._write_batch(self.val_writer, self.val_loss, self.val_metrics, self.val_step)

    def _loop(self, step, after, loss_metric, metrics):
        k = self.steps_per_execution

        def run(iterator):
            done = tf.constant(0, tf.int32)
            for _ in tf.range(k):
                optional = iterator.get_next_as_optional()
                if not optional.has_value():
                    break
                x, y = optional.get_value()
                after(step(x, y))
                done += 1
            logs = {"loss": loss_metric.result()}
            for metric in metrics:
                logs[metric.name] = metric.result()
            return done, logs

        return run if self.mode == "eager" else tf.function(run)

    @staticmethod
    def _write_batch(writer, loss_metric, metrics, step):
        if writer is None:
            return
        with writer.as_default(step=step):
            _scalar("batch_loss", loss_metric.result())
            for metric in metrics:
                _scalar(f"batch_{metric.name}", metric.result())

    # ---- bookkeeping ----

    def logs(self, prefix=""):
        """Current running values as floats: `{"loss": ..., "<metric>": ...}`, names prefixed."""
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
        return metric_vars + [self.val_step, self.train_counter]

    def evaluate(self, dataset):
        """Run the test function over `dataset`; returns the `val_` logs as floats."""
        self.reset(validation=True)
        iterator = iter(dataset)
        calls = _calls_per_epoch(dataset, self.steps_per_execution)
        if calls is not None:  # a known length: no host read of the step count per call
            for _ in range(calls):
                self.test_function(iterator)
        else:
            while int(self.test_function(iterator)[0]) == self.steps_per_execution:
                pass
        return self.logs(prefix="val_")


def _steps(dataset):
    """The number of batches of `dataset`, or `None` when TensorFlow cannot tell."""
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None


def _calls_per_epoch(dataset, k):
    steps = _steps(dataset)
    return None if steps is None else -(-steps // k)


class History(dict):
    """`{"loss": [...], "val_loss": [...], ...}`, one value per epoch; `.trainer` is the engine."""

    trainer = None


def train(model, train_data, *, loss, optimizer, epochs=1, validation_data=None, metrics=(),
          mode="function", log_dir=None, checkpoint_dir=None, checkpoint_every=None,
          callbacks=(), verbose=1, batch_size=32, num_classes=None, recalibrate_bn=False,
          steps_per_execution=1):
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

    Returns:
        A `History` dict of lists, one value per epoch: `loss`, each metric, and `val_`
        versions; its `trainer` attribute holds the step functions.

    Raises:
        ValueError: a bad `mode` or `steps_per_execution`, data the model cannot take, or labels
            out of range (before the first step).
        FloatingPointError: a non-finite loss (checked inside the compiled call); no checkpoint
            is written after it.
    """
    from spec_impl.checks import check_training_inputs

    train_ds = as_dataset(train_data, batch_size)
    val_ds = None if validation_data is None else as_dataset(validation_data, batch_size,
                                                              "validation_data")
    check_training_inputs(model, train_ds, loss, num_classes)
    if val_ds is not None:
        check_training_inputs(model, val_ds, loss, num_classes)
    trainer = Trainer(model, loss=loss, optimizer=optimizer, metrics=metrics, mode=mode,
                      log_dir=log_dir, element_spec=train_ds.element_spec,
                      steps_per_execution=steps_per_execution)
    trainer.optimizer.build(model.trainable_variables)
    if getattr(model, "optimizer", None) is not trainer.optimizer:
        model.optimizer = trainer.optimizer  # for callbacks that read model.optimizer
    ckpt = None if checkpoint_dir is None else TrainingCheckpoint(checkpoint_dir, trainer)
    start_epoch, start_step = (0, 0) if ckpt is None else ckpt.restore_latest()

    steps = _steps(train_ds)
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
    iterator = iter(dataset.skip(skip))
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
