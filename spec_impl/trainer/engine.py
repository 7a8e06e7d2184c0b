"""The training engine's step machinery, written once and tested: `Trainer`.

GradientTape -> loss (Keras's compiled loss plus `model.losses`) -> gradients ->
`apply_gradients` -> metrics, compiled with `tf.function` (or XLA), several steps per call,
logged to TensorBoard with `tf.summary`. `Trainer.fit` (`spec_impl.trainer.loop`) runs it epoch
by epoch with Keras callbacks, checkpoints and validation.

Losses, metrics, their names, output dicts, `loss_weights` and sample weights are resolved by
Keras itself: the `Trainer` compiles the model and its step calls `Model.compute_loss` and
`Model.compute_metrics`, the public route of the keras-io guide "Customizing what happens in
fit()". So `train` logs what `fit` logs.

Corrections to the documents: `training=True` in the train step and `False` in the test step
(003's loop ignores it); validation scalars go to their own `validation/` writer (000 writes them
to the training writer); the regularization and `add_loss` terms are part of the loss.
"""

import contextlib

import keras
import tensorflow as tf
from tensorboard.plugins.scalar import metadata as scalar_metadata

from spec_impl._validation import MODES, check_positive_int
from spec_impl.trainer import keras_api
from spec_impl.trainer.distribute import (
    check_optimizer_scope,
    check_xla_devices,
    distribute_dataset,
    explicit,
)


def _compile(fn, mode, element_spec=None):
    """`fn` as it runs in `mode`, traced for batches of `element_spec` with a free batch axis
    (one trace serves a partial last batch and a fixed batch alike); without a spec, traced per
    input signature (a validation set of another dtype gets its own trace)."""
    if mode == "eager":
        return fn
    signature = None if element_spec is None else [tf.nest.map_structure(
        lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype), element_spec)]
    return tf.function(fn, input_signature=signature, jit_compile=(mode == "xla"))


def _batch_size(x):
    """The running loss is weighted by batch size, as under `fit`: an epoch's loss is the mean
    over its samples, so a partial last batch counts for what it holds."""
    return tf.shape(tf.nest.flatten(x)[0])[0]


def _scalar(tag, value):
    """`tf.summary.scalar` under exactly `tag`, whatever name scope (AutoGraph's `while/cond`
    inside a multi-step loop) is current."""
    tf.summary.write(tag, tf.cast(value, tf.float32), metadata=_SCALAR_METADATA)


_SCALAR_METADATA = scalar_metadata.create_summary_metadata(display_name=None, description=None)
NON_FINITE = "spec_impl: non-finite loss"  # the message of the in-graph finiteness check
ON_NAN = ("stop", "skip")
# `on_nan="skip"` stops after this many consecutive skipped steps by default: a few bad batches
# are survivable, a run of them means the model itself has diverged.
MAX_SKIPPED = 10


class Trainer:
    """The training engine: what `compile` holds, the step functions, and `fit`.

    Two levels, as in `fit`: `train_step(data)` is the numeric step (forward, loss, gradients,
    update, metrics), compiled with XLA in `"xla"` mode; `train_function(iterator)` runs up to
    `steps_per_execution` of them in one call, checks each loss is finite and writes the batch
    summaries, and is compiled with `tf.function` but never with XLA (XLA has no kernel for
    summary writes). It returns the number of steps run and the running logs as tensors, so the
    caller needs no host synchronisation per step. `test_step` / `test_function` likewise.

    The model is compiled with `optimizer`, `loss`, `metrics`, `loss_weights` and
    `weighted_metrics` (Keras then wraps the optimizer in a `LossScaleOptimizer` under
    `mixed_float16`); with none of them, a model that is already compiled keeps its settings.

    Args:
        model: a Keras model.
        optimizer: a Keras optimizer (object or name); `"rmsprop"` when `loss` is given alone,
            as in `compile`.
        loss: a Keras loss (object, name or function), a list or a dict per output.
        metrics: metrics as `compile` takes them (names such as `"mae"` or `"acc"`, functions,
            objects, lists or dicts per output).
        loss_weights: per-output loss weights, as in `compile`.
        weighted_metrics: metrics weighted by `sample_weight` / `class_weight`, as in `compile`.
        mode: `"eager"`, `"function"` (`tf.function`) or `"xla"` (`tf.function(jit_compile=True)`).
        steps_per_execution: batches per call of `train_function` / `test_function`.
        log_dir: where `train/` and `validation/` TensorBoard event files go, or `None`.
        strategy: a `tf.distribute.Strategy` (`spec_impl.make_strategy`) whose scope holds the
            model's variables, or `None`. The steps then run per replica (`strategy.run`), each
            replica's loss the share of the global batch's (`_replica_loss`); the model is
            compiled in the strategy's scope and `iterator` distributes datasets.
        on_nan: `"stop"` (a step with a non-finite loss or gradient stops the run) or `"skip"`
            (its update is not applied and it is left out of the loss and metrics; the run stops
            after `max_skipped` consecutive skipped steps).
        max_skipped: see `on_nan`.
    """

    def __init__(self, model, *, optimizer=None, loss=None, metrics=None, loss_weights=None,
                 weighted_metrics=None, mode="function", steps_per_execution=1, log_dir=None,
                 strategy=None, on_nan="stop", max_skipped=MAX_SKIPPED):
        if mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}. Received: mode={mode!r}")
        if on_nan not in ON_NAN:
            raise ValueError(f"Expected `on_nan` to be one of {', '.join(ON_NAN)}. "
                             f"Received: on_nan={on_nan!r}")
        self.on_nan = on_nan
        self.max_skipped = check_positive_int("max_skipped", max_skipped)
        self.model = model
        self.mode = mode
        self.steps_per_execution = check_positive_int("steps_per_execution", steps_per_execution)
        self.strategy = explicit(strategy)
        if mode == "xla" and self.strategy is not None:
            check_xla_devices(self.strategy)
        settings = dict(optimizer=optimizer, loss=loss, metrics=metrics,
                        loss_weights=loss_weights, weighted_metrics=weighted_metrics)
        with self.scope():  # optimizer slots and metric totals are replica-aware variables
            if any(v is not None for v in settings.values()) or not model.compiled:
                if settings["optimizer"] is None:
                    settings["optimizer"] = "rmsprop"  # compile's default
                if self.strategy is not None and not isinstance(optimizer, (str, type(None))):
                    check_optimizer_scope(optimizer, self.strategy)
                model.compile(**settings)
        self.optimizer = model.optimizer
        # Steps run so far (the TensorBoard step); not `optimizer.iterations`, which a loss-scale
        # optimizer does not advance on a skipped step.
        self.train_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        self.val_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="val_step")
        self.last_loss = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="last_loss")
        # on_nan="skip": steps skipped in all, in a row, and the counter value of the last one
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped")
        self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False, name="in_a_row")
        self.last_skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="last_skipped")
        self._step_counts = {}
        self.train_writer = self.val_writer = None
        if log_dir is not None:
            self.train_writer = tf.summary.create_file_writer(f"{log_dir}/train")
            self.val_writer = tf.summary.create_file_writer(f"{log_dir}/validation")
        # Per replica under a strategy (XLA-compiled in xla mode), inside a tf.function that
        # takes distributed values: `train_function`.
        self._step_mode = mode if self.strategy is None or mode == "xla" else "eager"
        self._train_spec = None
        self.train_step = self._distributed(_compile(self._train_step, self._step_mode))
        self.test_step = self._distributed(_compile(self._test_step, self._step_mode))
        self.train_function = self._loop(lambda data: self.train_step(data), self._after_train_step)
        self.test_function = self._loop(lambda data: self.test_step(data), self._after_test_step)
        # mode="xla" with k > 1 on one device: the whole k-step loop in one XLA program.
        self.group_function = None
        if mode == "xla" and self.steps_per_execution > 1 and self.strategy is None:
            self.train_group = tf.function(self._train_group, jit_compile=True)
            self.group_function = tf.function(self._group)
        if model.built:
            self.build()

    @property
    def _log_names(self):
        return self.model.get_metrics_result().keys()

    def build(self, element_spec=None):
        """Create every variable before the first step, as `fit` does: the model's (from
        `element_spec`, the batches' spec, when it is not built), the compiled loss and
        metrics', and the optimizer's."""
        with self.scope():
            if element_spec is not None:
                keras_api.symbolic_build(self.model, element_spec)
            self.optimizer.build(self.model.trainable_variables)
        if element_spec is not None and element_spec != self._train_spec:
            # the training batches' spec fixes the train step's signature: one trace for the
            # loop's batches and for a fixed batch (the benchmarks) alike
            self._train_spec = element_spec
            self.train_step = self._distributed(_compile(self._train_step, self._step_mode,
                                                         element_spec))
        return self

    # ---- the numeric steps: one for one device and for each replica ----

    def _loss(self, x, y, predictions, sample_weight, training):
        """The loss to differentiate and the batch's mean loss to report.

        On one device both are `Model.compute_loss` (the compiled loss plus `model.losses`).
        Under a strategy the first is the replica's share of the global batch's loss
        (`_replica_loss`).
        """
        if self.strategy is None:
            loss = self.model.compute_loss(x, y, predictions, sample_weight, training=training)
            return loss, loss
        return self._replica_loss(y, predictions, sample_weight, list(self.model.losses))

    def _replica_loss(self, y, predictions, sample_weight, extra_losses):
        """The replica's share of the global loss (to differentiate: the optimizer sums the
        gradients over replicas) and its own mean loss (to report).

        Keras's compiled loss is the replica's mean over its own batch, divided by the number
        of replicas (`scale_loss_for_distribution`), which is the global mean only when every
        replica holds as many samples. It is unscaled and weighted by the replica's share of
        the global batch instead, with the global size all-reduced, so that an uneven partial
        batch counts right; `extra_losses` (`model.losses`), which each replica computes whole
        (a weight penalty) or as a mean over its own batch (an `add_loss` term), get the same
        weight: 1 / replicas on an even split, as `tf.nn.scale_regularization_loss`, and exact
        on an uneven one. They are read right after the forward pass: Keras keeps them on the
        layers, in one list shared by the replica threads, which the next replica's forward pass
        replaces at the first cross-replica call (the all-reduce here).
        """
        compiled = self.model._compile_loss
        mean = keras_api.unscale_loss_for_distribution(compiled(y, predictions, sample_weight))
        if extra_losses:
            mean = mean + tf.add_n([tf.cast(term, mean.dtype) for term in extra_losses])
        local = _batch_size(predictions)
        context = tf.distribute.get_replica_context()
        global_batch = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        share = tf.math.divide_no_nan(tf.cast(local, mean.dtype), tf.cast(global_batch, mean.dtype))
        return share * mean, mean

    def _train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=True)
            loss, mean = self._loss(x, y, predictions, sample_weight, training=True)
            scaled = self.optimizer.scale_loss(loss)  # the identity unless loss scaling
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        step = (x, y, predictions, sample_weight, mean, gradients)
        if self.on_nan == "stop":
            self._update(*step)
            return self._nan_unless_finite(loss, gradients)
        # skip: the update only if every replica's loss and gradients are finite
        bad = tf.cast(tf.logical_not(tf.math.is_finite(self._nan_unless_finite(loss, gradients))),
                      tf.int32)
        nan = tf.constant(float("nan"), loss.dtype)
        if self.strategy is None or tf.__internal__.distribute.strategy_supports_no_merge_call():
            if self.strategy is not None:
                bad = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, bad)

            def update():
                self._update(*step)
                return loss

            return tf.cond(bad == 0, update, lambda: nan)

        # A branch that all-reduces (apply_gradients) cannot sit in a replica's cond under a
        # merge-call strategy: the cond is taken in the cross-replica context, as Keras's
        # LossScaleOptimizer does, and the update runs for each replica inside it.
        def cross_replica(distribution, bad, step):
            any_bad = distribution.reduce(tf.distribute.ReduceOp.SUM, bad, axis=None)
            tf.cond(any_bad == 0, lambda: distribution.extended.call_for_each_replica(
                self._update, args=step), lambda: None)
            return any_bad

        any_bad = tf.distribute.get_replica_context().merge_call(cross_replica, args=(bad, step))
        return tf.where(any_bad == 0, loss, nan)

    def _update(self, x, y, predictions, sample_weight, mean, gradients):
        """Apply `gradients` and update the loss tracker and the metrics."""
        variables = self.model.trainable_variables
        self.optimizer.apply_gradients(zip(gradients, variables))  # unscales first
        keras_api.loss_tracker(self.model).update_state(mean, sample_weight=_batch_size(x))
        self.model.compute_metrics(x, y, predictions, sample_weight=sample_weight)

    def _test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        predictions = self.model(x, training=False)
        loss, mean = self._loss(x, y, predictions, sample_weight, training=False)
        keras_api.loss_tracker(self.model).update_state(mean, sample_weight=_batch_size(x))
        self.model.compute_metrics(x, y, predictions, sample_weight=sample_weight)
        return loss

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

    def _distributed(self, step):
        if self.strategy is None:
            return step

        def distributed_step(data):
            losses = self.strategy.run(step, args=(data,))
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

        return distributed_step

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

    def _after_train_step(self, loss, logs):
        self.train_counter.assign_add(1)
        self.last_loss.assign(tf.cast(loss, tf.float32))
        if self.on_nan == "stop":
            tf.debugging.Assert(tf.math.is_finite(loss), [NON_FINITE])
        else:
            bad = tf.logical_not(tf.math.is_finite(loss))
            self.skipped.assign_add(tf.cast(bad, tf.int64))
            self.skipped_in_a_row.assign(tf.where(bad, self.skipped_in_a_row + 1, 0))
            self.last_skipped.assign(tf.where(bad, self.train_counter, self.last_skipped))
            tf.debugging.Assert(self.skipped_in_a_row < self.max_skipped, [NON_FINITE])
        self._write_batch(self.train_writer, logs, self.train_counter)

    def _after_test_step(self, loss, logs):
        self.val_step.assign_add(1)
        self._write_batch(self.val_writer, logs, self.val_step)

    def _train_group(self, stacked):
        """k train steps over `stacked` (each leaf `(k, batch, ...)`), all in one XLA program.

        Returns the k losses and, when TensorBoard is written, the k running logs, as tensors
        of shape `(k,)`: an iterator cannot be read inside an XLA program, so the k batches come
        stacked, and the summaries and finiteness checks, which XLA cannot run, follow outside.
        """
        k = self.steps_per_execution
        names = list(self._log_names) if self.train_writer is not None else []
        losses = tf.TensorArray(tf.float32, size=k)
        logs = [tf.TensorArray(tf.float32, size=k) for _ in names]
        for i in tf.range(k):
            loss = self._train_step(tf.nest.map_structure(lambda t: t[i], stacked))  # noqa: B023
            losses = losses.write(i, tf.cast(loss, tf.float32))
            if names:
                values = self.model.get_metrics_result()
                logs = [log.write(i, tf.cast(values[n], tf.float32)) for log, n in zip(logs, names)]
        return losses.stack(), {n: log.stack() for n, log in zip(names, logs)}

    def _group(self, iterator):
        """Read k batches in the graph, stack them and run `train_group` (one XLA program);
        then, per step, the counter, the finiteness check and the batch summaries."""
        k = self.steps_per_execution
        batches = [iterator.get_next() for _ in range(k)]
        stacked = tf.nest.map_structure(lambda *leaves: tf.stack(leaves), *batches)
        losses, logs = self.train_group(stacked)
        if self.on_nan == "skip":  # every step ran (a skipped one changed nothing): count each
            for i in tf.range(k):
                self._after_train_step(losses[i], lambda: {n: v[i] for n, v in logs.items()})  # noqa: B023
            return tf.constant(k), self.model.get_metrics_result()
        # Vectorized over the group (a graph loop costs tens of microseconds per iteration):
        # the counter and the last loss stop at the first non-finite step, which the check
        # then names; summaries are written one point per step.
        finite = tf.math.is_finite(losses)
        all_finite = tf.reduce_all(finite)
        ran = tf.where(all_finite, k, tf.cast(tf.argmin(tf.cast(finite, tf.int32)), tf.int32) + 1)
        if self.train_writer is not None:
            for i in tf.range(ran):
                self._write_batch(self.train_writer, lambda: {n: v[i] for n, v in logs.items()},  # noqa: B023
                                  self.train_counter + tf.cast(i, tf.int64) + 1)
        self.train_counter.assign_add(tf.cast(ran, tf.int64))
        self.last_loss.assign(losses[ran - 1])
        tf.debugging.Assert(all_finite, [NON_FINITE])
        return tf.constant(k), self.model.get_metrics_result()

    def _loop(self, step, after):
        """`run(iterator, steps)`: up to `steps` (a tensor, default k) steps in one call."""
        k = self.steps_per_execution

        def run(iterator, steps=k):
            done = tf.constant(0, tf.int32)
            for _ in tf.range(steps):
                optional = iterator.get_next_as_optional()
                if not optional.has_value():
                    break
                loss = step(optional.get_value())
                after(loss, self.model.get_metrics_result)
                done += 1
            return done, self.model.get_metrics_result()

        return run if self.mode == "eager" else tf.function(run)

    @staticmethod
    def _write_batch(writer, read_logs, step):
        if writer is None:
            return
        with writer.as_default(step=step):
            for name, value in read_logs().items():
                _scalar(f"batch_{name}", value)

    def steps_tensor(self, steps):
        """`steps` as the int32 tensor `train_function` takes (one trace for every count)."""
        if steps not in self._step_counts:
            self._step_counts[steps] = tf.constant(steps, tf.int32)
        return self._step_counts[steps]

    # ---- bookkeeping ----

    def logs(self, prefix=""):
        """Current running values as floats: `{"loss": ..., "<metric>": ...}`, names prefixed."""
        return {prefix + name: float(value)
                for name, value in self.model.get_metrics_result().items()}

    def reset(self):
        """Reset the running loss and metrics (at an epoch's start, before validation)."""
        self.model.reset_metrics()

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
        """Variables to checkpoint besides the model's and the optimizer's: the running loss
        and metric totals and the step counters."""
        return [*self.model.metrics_variables, self.val_step, self.train_counter]

    def evaluate(self, batches):
        """Run the test function over `batches` (`spec_impl.trainer.data.Batches` or a batched
        dataset); returns the `val_` logs as floats."""
        from spec_impl.trainer.data import Batches

        if not isinstance(batches, Batches):
            batches = Batches(batches)
        self.reset()
        iterator = self.iterator(batches.dataset)
        steps = batches.steps
        if steps is not None:  # a known length: no host read of the step count per call
            k = self.steps_per_execution
            for first in range(0, steps, k):
                self.test_function(iterator, self.steps_tensor(min(k, steps - first)))
        else:
            k = self.steps_tensor(self.steps_per_execution)
            while int(self.test_function(iterator, k)[0]) == self.steps_per_execution:
                pass
        return self.logs(prefix="val_")

    def fit(self, x=None, y=None, **kwargs):
        """Train with the custom loop, taking what `Model.fit` takes; see `spec_impl.train`.

        Returns:
            The `keras.callbacks.History` (also `model.history`).
        """
        from spec_impl.trainer.loop import FitLoop

        return FitLoop(self, **kwargs).run(x, y)
