"""The training engine's step machinery, written once and tested: `Trainer`.

GradientTape -> loss (plus `model.losses`) -> gradients -> `apply_gradients` -> metrics
`update_state` / `result` / `reset_state`, compiled with `tf.function` (or XLA), several steps per
call, logged to TensorBoard with `tf.summary`. `spec_impl.training.train` drives it epoch by
epoch with Keras callbacks, checkpoints and progress.

Corrections to the documents: `training=True` in the train step and `False` in the test step
(003's loop ignores it); validation scalars go to their own `validation/` writer (000 writes them
to the training writer); the regularization and `add_loss` terms are part of the loss.
"""

import contextlib

import keras
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from spec_impl._validation import MODES, check_positive_int
from spec_impl.compile_utils import as_loss, relaxed_spec, resolve_metric
from spec_impl.distribute import (
    check_optimizer_scope,
    check_xla_devices,
    distribute_dataset,
    explicit,
    per_example_loss,
)
from spec_impl.precision import needs_loss_scaling


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
        strategy: a `tf.distribute.Strategy` (`spec_impl.make_strategy`) whose scope holds the
            model's variables, or `None`. The steps then run per replica (`strategy.run`), each
            replica's loss averaged over the global batch and `model.losses` divided by the
            number of replicas (`spec_impl.distribute`); the optimizer and the metrics are
            created in the strategy's scope here, and `iterator` distributes datasets.
    """

    def __init__(self, model, *, loss, optimizer, metrics=(), mode="function", log_dir=None,
                 element_spec=None, steps_per_execution=1, strategy=None):
        if mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}. Received: mode={mode!r}")
        self.model = model
        self.mode = mode
        self.steps_per_execution = check_positive_int("steps_per_execution", steps_per_execution)
        self.strategy = explicit(strategy)
        if mode == "xla" and self.strategy is not None:
            check_xla_devices(self.strategy)
        self.loss_fn = as_loss(loss)
        if self.strategy is not None:
            self.per_example_loss = per_example_loss(self.loss_fn)
        with self.scope():  # optimizer slots and metric totals are replica-aware variables
            optimizer = keras.optimizers.get(optimizer)
            if self.strategy is not None:
                check_optimizer_scope(optimizer, self.strategy)
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
        signature = None if element_spec is None else list(relaxed_spec(element_spec))
        if self.strategy is None:
            self.train_step = _compile(self._train_step, mode, signature)
            self.test_step = _compile(self._test_step, mode, signature)
        else:  # per replica (XLA-compiled in xla mode), in a step taking distributed values
            replica_mode = "xla" if mode == "xla" else "eager"  # train_function is the tf.function
            self.train_step = self._distributed(_compile(self._replica_train_step, replica_mode,
                                                         None))
            self.test_step = self._distributed(_compile(self._replica_test_step, replica_mode,
                                                        None))
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
        return self._nan_unless_finite(loss, gradients)

    def _test_step(self, x, y):
        predictions = self.model(x, training=False)
        loss = self._total_loss(y, predictions)
        self.val_loss.update_state(loss, sample_weight=_batch_size(x))
        for metric in self.val_metrics:
            metric.update_state(y, predictions)
        return loss

    # ---- the numeric steps, per replica under a strategy ----

    def _replica_loss(self, y, predictions, extra_losses):
        """The replica's share of the global loss (to differentiate: the optimizer sums the
        gradients over replicas) and its own mean loss (to report), with its batch size.

        The per-example losses are summed and divided by the global batch size, all-reduced so
        that an uneven partial batch counts right. `extra_losses` (`model.losses`), which each
        replica computes whole (a weight penalty) or as a mean over its own batch (an
        `add_loss` term), are weighted by the replica's share of the global batch: 1 / replicas
        on an even split, as `tf.nn.scale_regularization_loss`, and exact on an uneven one.
        They are read right after the forward pass: Keras keeps them on the layers, in one list
        shared by the replica threads, which the next replica's forward pass replaces at the
        first cross-replica call (the all-reduce here).
        """
        per_example = tf.convert_to_tensor(self.per_example_loss(y, predictions))
        if per_example.shape.rank > 1:  # as `sum_over_batch_size`: a mean over the other axes
            per_example = tf.reduce_mean(per_example, axis=list(range(1, per_example.shape.rank)))
        local = tf.shape(per_example)[0]
        context = tf.distribute.get_replica_context()
        global_batch = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
        local = tf.cast(local, per_example.dtype)
        mean = tf.math.divide_no_nan(tf.reduce_sum(per_example), local)
        if extra_losses:
            extra = tf.add_n([tf.cast(term, loss.dtype) for term in extra_losses])
            share = tf.math.divide_no_nan(local, tf.cast(global_batch, loss.dtype))
            loss = loss + share * extra
            mean = mean + extra
        return loss, mean, local

    def _replica_train_step(self, x, y):
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=True)
            loss, mean, local = self._replica_loss(y, predictions, list(self.model.losses))
            scaled = self.optimizer.scale_loss(loss)
        variables = self.model.trainable_variables
        gradients = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))  # sums over replicas
        self.train_loss.update_state(mean, sample_weight=local)
        for metric in self.train_metrics:
            metric.update_state(y, predictions)
        return self._nan_unless_finite(loss, gradients)

    def _nan_unless_finite(self, loss, gradients):
        """The step's loss, or NaN when a gradient is not finite, so that the finiteness check
        stops the run either way. A finite loss can hide NaN gradients: on some CPUs a fused
        matmul + ReLU maps a NaN input to 0, so the loss stays finite while the first layer's
        weights become NaN. Under loss scaling non-finite gradients are expected (the optimizer
        skips that step and lowers the scale), so only the loss is checked."""
        if isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer):
            return loss
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients
                                if g is not None])
        return tf.where(finite, loss, tf.constant(float("nan"), loss.dtype))

    def _replica_test_step(self, x, y):
        predictions = self.model(x, training=False)
        loss, mean, local = self._replica_loss(y, predictions, list(self.model.losses))
        self.val_loss.update_state(mean, sample_weight=local)
        for metric in self.val_metrics:
            metric.update_state(y, predictions)
        return loss

    def _distributed(self, replica_step):
        def step(x, y):
            losses = self.strategy.run(replica_step, args=(x, y))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return step

    def scope(self):
        """The strategy's scope, or a no-op without one."""
        return contextlib.nullcontext() if self.strategy is None else self.strategy.scope()

    def iterator(self, dataset, skip=0):
        """An iterator over `dataset` from batch `skip` on, distributed under a strategy."""
        if skip:
            dataset = dataset.skip(skip)
        if self.strategy is not None:
            dataset = distribute_dataset(self.strategy, dataset)
        return iter(dataset)

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
        iterator = self.iterator(dataset)
        calls = calls_per_epoch(dataset, self.steps_per_execution)
        if calls is not None:  # a known length: no host read of the step count per call
            for _ in range(calls):
                self.test_function(iterator)
        else:
            while int(self.test_function(iterator)[0]) == self.steps_per_execution:
                pass
        return self.logs(prefix="val_")


def dataset_steps(dataset):
    """The number of batches of `dataset`, or `None` when TensorFlow cannot tell."""
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None


def calls_per_epoch(dataset, k):
    """Calls of a `k`-steps-per-call function that one pass over `dataset` takes, or `None`."""
    steps = dataset_steps(dataset)
    return None if steps is None else -(-steps // k)
