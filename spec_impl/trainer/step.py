"""The numeric steps, as Keras's `Trainer.train_step` / `test_step`: forward, loss, gradients,
update, metrics, on one device or per replica (`Steps`).

Losses, metrics, their names, output dicts, `loss_weights` and sample weights are resolved by
Keras itself: the step calls `Model.compute_loss` and `Model.compute_metrics`, the public route of
the keras-io guide "Customizing what happens in fit()". A model that overrides `train_step` or
`test_step` has its own step called in their place, as `fit` calls it.

A step returns its loss as the finiteness check reads it: NaN when a gradient is not finite,
`WEIGHTS_OVERFLOWED` when the update left a weight non-finite; the checks are
`spec_impl.trainer.step_checks`, outside the step (and outside XLA).
"""

import warnings

import keras
import tensorflow as tf

from spec_impl.trainer import keras_api
from spec_impl.trainer.non_finite import WEIGHTS_OVERFLOWED
from spec_impl.trainer.randomness import keep_random_state

NO_TRAINABLE_WEIGHTS = "The model does not have any trainable weights."  # fit's warning


def free_batch(element_spec):
    """`element_spec` with its batch axis left open (`None`)."""
    return tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype),
                                 element_spec)


def compile_for(fn, mode, element_spec=None):
    """`fn` as it runs in `mode`, traced for batches of `element_spec` with a free batch axis
    (one trace serves a partial last batch and a fixed batch alike); without a spec, traced per
    input signature (a validation set of another dtype gets its own trace)."""
    if mode == "eager":
        return fn
    signature = None if element_spec is None else [free_batch(element_spec)]
    return tf.function(fn, input_signature=signature, jit_compile=(mode == "xla"))


def overrides(model, name):
    """Whether `model`'s class defines its own `name` (`train_step`, `test_step`) in place of
    Keras's: `train` then calls it, as `fit` does."""
    return getattr(type(model), name) is not getattr(keras.Model, name)


def fixed_batch(model):
    """Whether the model declares a fixed batch size (`keras.Input(batch_shape=(4, 3))`, a
    stateful RNN): its steps are then traced for the batches' own shapes, not a free batch axis."""
    try:
        inputs = model.inputs or []
    except (AttributeError, ValueError):  # a subclassed or unbuilt model declares none
        return False
    return any(tensor.shape[0] is not None for tensor in inputs)


def flat(logs):
    """A step's logs with nested dicts (a `CompileMetrics` result) lifted to the top level, as
    `get_metrics_result` and Keras's callbacks flatten them."""
    result = {}
    for name, value in logs.items():
        if isinstance(value, dict):
            result.update(flat(value))
        else:
            result[name] = value
    return result


def checked_value(logs):
    """What a model's own `train_step` returned that the finiteness check reads: its `loss`, or
    else the sum of the entries named `*_loss` (a GAN's `d_loss` and `g_loss`); 0 (nothing to
    check) when it returns no loss."""
    names = ["loss"] if "loss" in logs else [n for n in logs if str(n).endswith("_loss")]
    if not names:
        return tf.constant(0.0)
    return tf.add_n([tf.cast(tf.reduce_sum(logs[n]), tf.float32) for n in names])


def batch_size(x):
    """The running loss is weighted by batch size, as under `fit`: an epoch's loss is the mean
    over its samples, so a partial last batch counts for what it holds."""
    return tf.shape(tf.nest.flatten(x)[0])[0]


class Steps:
    """A model's train and test steps, raw (`train_step`, `test_step`, as Keras names them) and
    as the loop calls them (`compiled(kind, mode)`: compiled, per replica, with their logs).

    Args:
        model: a compiled Keras model.
        strategy: a `tf.distribute.Strategy` or `None`.
        on_nan: `"stop"` or `"skip"` (a step with a non-finite loss or gradient applies no
            update).
    """

    def __init__(self, model, strategy, on_nan):
        self.model = model
        self.strategy = strategy
        self.on_nan = on_nan
        self.custom_train_step = overrides(model, "train_step")
        self.custom_test_step = overrides(model, "test_step")
        self.free_batch = not fixed_batch(model)

    @property
    def optimizer(self):
        return self.model.optimizer

    def compiled(self, kind, mode, element_spec=None):
        """The step `kind` (`"train"` or `"test"`) as the loop calls it: compiled for `mode`,
        run per replica under a strategy, returning `(loss, logs)` (the loss the finiteness
        check reads and the step's logs, as `fit`'s step returns them). `.traced` is the
        compiled step itself (its traces, its compiler IR)."""
        custom = self.custom_train_step if kind == "train" else self.custom_test_step
        if custom:
            step = getattr(self.model, f"{kind}_step")  # the model's own, as fit calls it
        else:
            step = self.train_step if kind == "train" else self.test_step
        traced = compile_for(step, mode, element_spec if self.free_batch else None)
        updates = kind == "train"

        def with_logs(data):
            if custom:
                logs = flat(self._run(traced, data, custom))
                loss = checked_value(logs)
            else:
                loss = self._run(traced, data, custom)
                logs = self.model.get_metrics_result()
            return (self.nan_unless_finite_weights(loss) if updates else loss), logs

        with_logs.traced = traced
        if not custom:  # its logs are the model's metrics: their zeros need no trace of the step
            with_logs.zero_logs = lambda: tf.nest.map_structure(
                tf.zeros_like, self.model.get_metrics_result())
        return with_logs

    def _run(self, step, data, custom):
        """`step` on every replica (or on the one device): the package's step returns the loss,
        summed over replicas; a model's own step returns its logs, reduced over replicas as
        `fit` reduces them."""
        if self.strategy is None:
            return step(data)
        values = self.strategy.run(step, args=(data,))
        if custom:
            return keras_api.reduce_per_replica(values, self.strategy)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)

    def create_variables(self, element_spec, compiled=None):
        """Trace the model's own `train_step` once, running nothing, so that the variables its
        first step creates (its optimizers' slots) exist before a checkpoint is made or
        restored. Called in the strategy's scope.

        `compiled` is the compiled step the loop calls (`compiled(...).traced`, a
        `tf.function`): tracing it here is the loop's own trace, reused by its first call,
        so the model's step is traced as many times as under `fit` and a draw made when it is
        traced (an op seed taken from NumPy) is `fit`'s. Without one (eager mode, a strategy)
        the trace is made aside and the global NumPy and Python random states are put back
        after it: it draws nothing the run would see."""
        specs = free_batch(element_spec) if self.free_batch else element_spec
        traced = getattr(compiled, "traced", None)
        if self.strategy is None and isinstance(traced, tf.types.experimental.PolymorphicFunction):
            traced.get_concrete_function(specs)
            return
        step = self.model.train_step
        if self.strategy is not None:  # traced per replica, where the step runs
            def step(data):
                return self.strategy.run(self.model.train_step, args=(data,))
        with keep_random_state():
            tf.function(step).get_concrete_function(specs)

    def optimizers(self):
        """The optimizers whose state a checkpoint keeps: the compiled one and any other the
        model holds as an attribute (a GAN's two)."""
        found = [self.optimizer]
        for value in vars(self.model).values():
            if isinstance(value, keras.optimizers.Optimizer) and all(value is not o for o in found):
                found.append(value)
        return found

    def one_train_step(self, data):
        """One train step on one device: `(loss, logs)`, the model's own step or the package's."""
        if self.custom_train_step:
            logs = flat(self.model.train_step(data))
            return self.nan_unless_finite_weights(checked_value(logs)), logs
        return self.nan_unless_finite_weights(self.train_step(data)), self.model.get_metrics_result()

    # ---- the numeric steps: one for one device and for each replica ----

    def train_step(self, data):
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
        return self._update_unless_bad(loss, gradients, step)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        predictions = self.model(x, training=False)
        loss, mean = self._loss(x, y, predictions, sample_weight, training=False)
        keras_api.loss_tracker(self.model).update_state(mean, sample_weight=batch_size(x))
        self.model.compute_metrics(x, y, predictions, sample_weight=sample_weight)
        return loss

    def _update_unless_bad(self, loss, gradients, step):
        """on_nan="skip": the update only if every replica's loss and gradients are finite;
        returns the loss, or NaN for a skipped step."""
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
        if variables:
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))  # unscales first
        else:  # nothing to train: the loss and metrics are still computed, as under fit
            warnings.warn(NO_TRAINABLE_WEIGHTS, stacklevel=2)
        keras_api.loss_tracker(self.model).update_state(mean, sample_weight=batch_size(x))
        self.model.compute_metrics(x, y, predictions, sample_weight=sample_weight)

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
        compiled = keras_api.compiled_loss(self.model)
        mean = keras_api.unscale_loss_for_distribution(compiled(y, predictions, sample_weight))
        if extra_losses:
            mean = mean + tf.add_n([tf.cast(term, mean.dtype) for term in extra_losses])
        local = batch_size(predictions)
        context = tf.distribute.get_replica_context()
        global_batch = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        share = tf.math.divide_no_nan(tf.cast(local, mean.dtype), tf.cast(global_batch, mean.dtype))
        return share * mean, mean

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

    def nan_unless_finite_weights(self, value):
        """`value` (the step's checked loss), or `WEIGHTS_OVERFLOWED` when the loss and the
        gradients were finite but the update left a trainable weight non-finite (an optimizer
        overflow: `Adam(epsilon=0)` on a zero gradient, a huge learning rate), so that the run
        stops where the loss is checked and the loop can tell the two apart."""
        variables = self.model.trainable_variables
        if not variables:
            return value
        finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
        overflowed = tf.logical_and(tf.logical_not(finite), tf.math.is_finite(value))
        return tf.where(overflowed, tf.constant(WEIGHTS_OVERFLOWED, value.dtype), value)
