"""The training engine's step machinery, written once and tested: `Trainer`.

GradientTape -> loss (Keras's compiled loss plus `model.losses`) -> gradients ->
`apply_gradients` -> metrics, compiled with `tf.function` (or XLA), several steps per call,
logged to TensorBoard with `tf.summary`. `Trainer.fit` (`spec_impl.trainer.fit_loop`) runs it epoch
by epoch with Keras callbacks, checkpoints and validation.

Losses, metrics, their names, output dicts, `loss_weights` and sample weights are resolved by
Keras itself: the `Trainer` compiles the model and its step calls `Model.compute_loss` and
`Model.compute_metrics`, the public route of the keras-io guide "Customizing what happens in
fit()". So `train` logs what `fit` logs.

A model that overrides `train_step` or `test_step` (document 002's `CustomModel`, a GAN) has its
own step called in their place, as `fit` calls it, and its returned logs reported.

Corrections to the documents: `training=True` in the train step and `False` in the test step
(003's loop ignores it); validation scalars go to their own `validation/` writer (000 writes them
to the training writer); the regularization and `add_loss` terms are part of the loss.
"""

import contextlib
import functools
import warnings

import keras
import tensorflow as tf

from spec_impl._validation import MAX_SKIPPED, MODES, check_choice, check_positive_int
from spec_impl.trainer import keras_api
from spec_impl.trainer.auto import AUTO, AUTO_MODES, K_CANDIDATES, Calibration
from spec_impl.trainer.distribute import (
    check_optimizer_scope,
    check_xla_devices,
    distribute_dataset,
    explicit,
)
from spec_impl.trainer.fit_loop import FitLoop
from spec_impl.trainer.non_finite import NON_FINITE, WEIGHTS_OVERFLOWED
from spec_impl.trainer.summaries import Summaries


def _free_batch(element_spec):
    """`element_spec` with its batch axis left open (`None`)."""
    return tf.nest.map_structure(lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype),
                                 element_spec)


def _compile(fn, mode, element_spec=None):
    """`fn` as it runs in `mode`, traced for batches of `element_spec` with a free batch axis
    (one trace serves a partial last batch and a fixed batch alike); without a spec, traced per
    input signature (a validation set of another dtype gets its own trace)."""
    if mode == "eager":
        return fn
    signature = None if element_spec is None else [_free_batch(element_spec)]
    return tf.function(fn, input_signature=signature, jit_compile=(mode == "xla"))


def overrides(model, name):
    """Whether `model`'s class defines its own `name` (`train_step`, `test_step`) in place of
    Keras's: `train` then calls it, as `fit` does."""
    return getattr(type(model), name) is not getattr(keras.Model, name)


def _fixed_batch(model):
    """Whether the model declares a fixed batch size (`keras.Input(batch_shape=(4, 3))`, a
    stateful RNN): its steps are then traced for the batches' own shapes, not a free batch axis."""
    try:
        inputs = model.inputs or []
    except (AttributeError, ValueError):  # a subclassed or unbuilt model declares none
        return False
    return any(tensor.shape[0] is not None for tensor in inputs)


def _flat(logs):
    """A step's logs with nested dicts (a `CompileMetrics` result) lifted to the top level, as
    `get_metrics_result` and Keras's callbacks flatten them."""
    flat = {}
    for name, value in logs.items():
        if isinstance(value, dict):
            flat.update(_flat(value))
        else:
            flat[name] = value
    return flat


def _checked_value(logs):
    """What a model's own `train_step` returned that the finiteness check reads: its `loss`, or
    else the sum of the entries named `*_loss` (a GAN's `d_loss` and `g_loss`); 0 (nothing to
    check) when it returns no loss."""
    names = ["loss"] if "loss" in logs else [n for n in logs if str(n).endswith("_loss")]
    if not names:
        return tf.constant(0.0)
    return tf.add_n([tf.cast(tf.reduce_sum(logs[n]), tf.float32) for n in names])


def _batch_size(x):
    """The running loss is weighted by batch size, as under `fit`: an epoch's loss is the mean
    over its samples, so a partial last batch counts for what it holds."""
    return tf.shape(tf.nest.flatten(x)[0])[0]


NO_TRAINABLE_WEIGHTS = "The model does not have any trainable weights."  # fit's warning
ON_NAN = ("stop", "skip")
# The XLA group unrolls at most this many steps in one program: its compilation grows with the
# steps unrolled (MiniInception on a 2-core CPU: about 15 s a step), its speed does not, so k =
# 32 runs four 8-step programs per call.
XLA_UNROLL = 8


# Measured by `spec-impl bench` on a 2-core AMD EPYC (docs/benchmarks.md): XLA on a CPU ran the
# sequential CNN's step 1.6x and its groups 1.7-1.9x slower than the function loop, and
# MiniInception's group 17 % faster after a 165 s compilation.
XLA_CPU_CONV_COST = ("ran the sequential CNN's steps 1.6-1.9x slower than mode='function' and "
                     "gained MiniInception 17 % after a 165 s compilation")


def _warn_if_slow_xla(model):
    """Once per `Trainer`: `mode="xla"` asked for a model with convolutions on a machine with
    no GPU, where XLA's CPU kernels ran convolutions slower than the function loop."""
    if tf.config.list_physical_devices("GPU"):
        return
    convolutions = [layer for layer in keras_api.all_layers(model)
                    if isinstance(layer, keras.layers.Conv2D | keras.layers.Conv1D
                                  | keras.layers.Conv3D | keras.layers.DepthwiseConv2D)]
    if convolutions:
        warnings.warn(
            f"mode='xla' on a CPU: in spec-impl bench, XLA {XLA_CPU_CONV_COST} "
            f"(docs/benchmarks.md), and {type(model).__name__} has {len(convolutions)} "
            f"convolution layer(s). "
            f"mode='auto' times both on this model and keeps the faster.", stacklevel=3)


class Trainer:
    """The training engine: what `compile` holds, the step functions, and `fit`.

    Two levels, as in `fit`: `train_step(data)` is the numeric step (forward, loss, gradients,
    update, metrics), compiled with XLA in `"xla"` mode; `train_function(iterator)` runs up to
    `steps_per_execution` of them in one call, checks each loss is finite and writes the batch
    summaries, and is compiled with `tf.function` but never with XLA (XLA has no kernel for
    summary writes). It returns the number of steps run and the last step's logs as tensors, so
    the caller needs no host synchronisation per step. `test_step` / `test_function` likewise.
    Both step attributes return `(loss, logs)`; `.traced` is the compiled step itself. A model's
    own `train_step` / `test_step` is called in place of the package's.

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
        mode: `"eager"`, `"function"` (`tf.function`), `"xla"` (`tf.function(jit_compile=True)`)
            or `"auto"` (chosen on the first steps of `fit`: `spec_impl.trainer.auto`).
        steps_per_execution: batches per call of `train_function` / `test_function`, or
            `"auto"` (likewise). `configure(mode, k)` switches between settings.
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
        if mode not in (*MODES, AUTO):
            raise ValueError(f"Expected `mode` to be one of {', '.join(MODES)}, {AUTO}. "
                             f"Received: mode={mode!r}")
        if steps_per_execution != AUTO:
            check_positive_int("steps_per_execution", steps_per_execution)
        if on_nan not in ON_NAN:
            raise ValueError(f"Expected `on_nan` to be one of {', '.join(ON_NAN)}. "
                             f"Received: on_nan={on_nan!r}")
        self.custom_train_step = overrides(model, "train_step")
        self.custom_test_step = overrides(model, "test_step")
        if self.custom_train_step and on_nan == "skip":
            raise ValueError(
                f"`on_nan='skip'` needs the package's own train step, and "
                f"{type(model).__name__} defines its own `train_step`: use on_nan='stop' (the "
                f"run stops at a non-finite `loss` it returns). Received: on_nan={on_nan!r}")
        self.on_nan = on_nan
        self.max_skipped = check_positive_int("max_skipped", max_skipped)
        self.model = model
        self.strategy = explicit(strategy)
        self.candidates = self._candidates(mode, steps_per_execution)
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
        # The counter value and loss of the first step whose check stopped the run (0: none).
        # Kept as values, because a failed check ends the call while the graph may already run
        # the next step's ops: the counter read after the error can be one step further.
        self.stopped_at = tf.Variable(0, dtype=tf.int64, trainable=False, name="stopped_at")
        self.stopped_loss = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="stopped_loss")
        # on_nan="skip": steps skipped in all, in a row, and the counter value of the last one
        self.skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped")
        self.skipped_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False, name="in_a_row")
        self.last_skipped = tf.Variable(0, dtype=tf.int64, trainable=False, name="last_skipped")
        self._step_counts = {}
        self.summaries = Summaries(log_dir)
        self._free_batch = not _fixed_batch(model)
        self._train_spec = None
        self._settings = {}  # (mode, k) -> that setting's compiled functions
        self._per_mode = {}  # mode -> the steps and loops every k of that mode shares
        self.configure(self.candidates[0][0], self.candidates[1][0])
        if mode == "xla":
            _warn_if_slow_xla(model)
        if model.built:
            self.build()

    def _candidates(self, mode, steps_per_execution):
        """`(modes, steps per call)` to choose among: the one given, or for `"auto"` those of
        `spec_impl.trainer.auto` (under a strategy, `"function"` mode: XLA per replica is for
        devices that need no calibration to favour it)."""
        modes = (mode,) if mode != AUTO else AUTO_MODES if self.strategy is None else ("function",)
        ks = (steps_per_execution,) if steps_per_execution != AUTO else K_CANDIDATES
        cluster = getattr(getattr(self.strategy, "cluster_resolver", None), "task_type", None)
        if len(modes) * len(ks) > 1 and cluster:
            raise ValueError(
                f"`mode` / `steps_per_execution` 'auto' times the steps in each process, and the "
                f"workers of a cluster must run the same setting: pass a mode and a number of "
                f"steps per call. Received: mode={mode!r}, "
                f"steps_per_execution={steps_per_execution!r}")
        return modes, ks

    def calibration(self, steps_per_epoch=None, total_steps=None):
        """A `spec_impl.trainer.auto.Calibration` for a run of epochs of `steps_per_epoch`
        steps, `total_steps` in all (`None`: unknown), or `None` when there is nothing to
        choose (one mode, one steps per call)."""
        modes, ks = self.candidates
        if len(modes) * len(ks) == 1:
            return None
        return Calibration(modes, ks, steps_per_epoch, total_steps, unroll=XLA_UNROLL)

    def configure(self, mode, steps_per_execution):
        """Run the next calls in `mode` with `steps_per_execution` steps per call (what
        `mode="auto"` switches between). The variables are shared by every setting, and each
        setting's compiled functions are kept, so that switching back traces nothing again.

        Sets `compiled_train_step` / `compiled_test_step` (one step each, compiled for the mode, per replica
        under a strategy), `train_function` / `test_function` (up to k steps per call) and, in
        `"xla"` mode with k > 1 on one device, `xla_function` (k steps in XLA programs of up
        to `XLA_UNROLL` steps each, `xla_program`), else `xla_function = None`. A setting is
        checked once, when first configured.
        """
        key = (mode, steps_per_execution)
        if key not in self._settings:
            check_choice("mode", mode, MODES)
            check_positive_int("steps_per_execution", steps_per_execution)
            if mode == "xla" and self.strategy is not None:
                check_xla_devices(self.strategy)
            self._settings[key] = self._functions(mode, steps_per_execution)
        self.mode, self.steps_per_execution = key
        for name, value in self._settings[key].items():
            setattr(self, name, value)
        return self

    def _functions(self, mode, k):
        """The compiled functions of one setting (see `configure`). The steps, the k-step
        loops and the XLA group's programs (up to `XLA_UNROLL` steps each) depend on the mode
        alone (k is the loop's argument), so every k of a mode shares them and their traces."""
        if mode not in self._per_mode:
            # Per replica under a strategy (XLA-compiled in xla mode), inside a tf.function
            # that takes distributed values: `train_function`.
            step_mode = mode if self.strategy is None or mode == "xla" else "eager"
            train_step = self._compiled("train", step_mode, self._train_spec)
            test_step = self._compiled("test", step_mode)
            self._per_mode[mode] = {
                "compiled_train_step": train_step, "compiled_test_step": test_step,
                "train_function": self._loop(train_step, self._after_train_step, mode),
                "test_function": self._loop(test_step, self._after_test_step, mode),
                "xla_program": None}
            if mode == "xla" and self.strategy is None:
                self._per_mode[mode]["xla_program"] = tf.function(self._xla_program,
                                                                  jit_compile=True)
        functions = {**self._per_mode[mode], "xla_function": None}
        # mode="xla" with k > 1 on one device: k steps in XLA programs of up to XLA_UNROLL.
        program = functions["xla_program"]
        if program is not None and k > 1:
            functions["xla_function"] = tf.function(functools.partial(self._xla_call, program, k))
        return functions

    def build(self, element_spec=None):
        """Create every variable before the first step, as `fit` does: the model's (from
        `element_spec`, the batches' spec, when it is not built), the compiled loss and
        metrics', and the optimizer's. A model with its own `train_step` creates what it
        needs in its first step, as under `fit` (a GAN has no `call` to build with, and
        optimizers of its own)."""
        if self.custom_train_step:
            if element_spec is not None:
                self._create_step_variables(element_spec)
            element_spec = None
        else:
            with self.scope():
                if element_spec is not None:
                    keras_api.symbolic_build(self.model, element_spec)
                if self.model.trainable_variables:
                    self.optimizer.build(self.model.trainable_variables)
        if element_spec is not None and element_spec != self._train_spec:
            # the training batches' spec fixes the train step's signature: one trace for the
            # loop's batches and for a fixed batch (the benchmarks) alike
            self._train_spec = element_spec
            self._settings.clear()  # every setting's train step is traced for this spec
            self._per_mode.clear()
            self.configure(self.mode, self.steps_per_execution)
        return self

    def _create_step_variables(self, element_spec):
        """Trace the model's own `train_step` once, running nothing, so that the variables its
        first step creates (its optimizers' slots) exist before a checkpoint is made or
        restored."""
        specs = _free_batch(element_spec) if self._free_batch else element_spec
        step = self.model.train_step
        if self.strategy is not None:  # traced per replica, where the step runs
            def step(data):
                return self.strategy.run(self.model.train_step, args=(data,))
        with self.scope():
            tf.function(step).get_concrete_function(specs)

    def optimizers(self):
        """The optimizers whose state a checkpoint keeps: the compiled one and any other the
        model holds as an attribute (a GAN's two)."""
        found = [self.optimizer]
        for value in vars(self.model).values():
            if isinstance(value, keras.optimizers.Optimizer) and all(value is not o for o in found):
                found.append(value)
        return found

    def _compiled(self, kind, mode, element_spec=None):
        """The step `kind` (`"train"` or `"test"`) as the loop calls it: compiled for `mode`,
        run per replica under a strategy, returning `(loss, logs)` (the loss the finiteness
        check reads and the step's logs, as `fit`'s step returns them)."""
        custom = self.custom_train_step if kind == "train" else self.custom_test_step
        if custom:
            step = getattr(self.model, f"{kind}_step")  # the model's own, as fit calls it
        else:
            step = self.train_step if kind == "train" else self.test_step
        spec = element_spec if self._free_batch else None
        return self._distributed(_compile(step, mode, spec), custom, updates=kind == "train")

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
        compiled = keras_api.compiled_loss(self.model)
        mean = keras_api.unscale_loss_for_distribution(compiled(y, predictions, sample_weight))
        if extra_losses:
            mean = mean + tf.add_n([tf.cast(term, mean.dtype) for term in extra_losses])
        local = _batch_size(predictions)
        context = tf.distribute.get_replica_context()
        global_batch = context.all_reduce(tf.distribute.ReduceOp.SUM, local)
        share = tf.math.divide_no_nan(tf.cast(local, mean.dtype), tf.cast(global_batch, mean.dtype))
        return share * mean, mean

    def _one_train_step(self, data):
        """One train step on one device: `(loss, logs)`, the model's own step or the package's."""
        if self.custom_train_step:
            logs = _flat(self.model.train_step(data))
            return self._nan_unless_finite_weights(_checked_value(logs)), logs
        return self._nan_unless_finite_weights(self.train_step(data)), self.model.get_metrics_result()

    def _nan_unless_finite_weights(self, value):
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
        if variables:
            self.optimizer.apply_gradients(zip(gradients, variables, strict=True))  # unscales first
        else:  # nothing to train: the loss and metrics are still computed, as under fit
            warnings.warn(NO_TRAINABLE_WEIGHTS, stacklevel=2)
        keras_api.loss_tracker(self.model).update_state(mean, sample_weight=_batch_size(x))
        self.model.compute_metrics(x, y, predictions, sample_weight=sample_weight)

    def test_step(self, data):
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

    def _distributed(self, step, custom=False, updates=False):
        """`step` run on every replica (or on the one device), returning `(loss, logs)`: the
        package's step returns the loss and its logs are the model's metrics (read across
        replicas); a model's own step returns its logs, reduced over replicas as `fit` reduces
        them, and the loss checked is read from them. With `updates` (a train step), the loss
        checked becomes `WEIGHTS_OVERFLOWED` when the update left a weight non-finite."""

        def run(data):
            if self.strategy is None:
                return step(data)
            values = self.strategy.run(step, args=(data,))
            if custom:
                return keras_api.reduce_per_replica(values, self.strategy)
            return self.strategy.reduce(tf.distribute.ReduceOp.SUM, values, axis=None)

        def with_logs(data):
            if custom:
                logs = _flat(run(data))
                loss = _checked_value(logs)
            else:
                loss = run(data)
                logs = self.model.get_metrics_result()
            return (self._nan_unless_finite_weights(loss) if updates else loss), logs

        with_logs.traced = step  # the compiled step itself (its traces, its compiler IR)
        return with_logs

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
            self._note_stop(tf.logical_not(tf.math.is_finite(loss)), loss)
            tf.debugging.Assert(tf.math.is_finite(loss), [NON_FINITE])
        else:  # an overflowed update has been applied: it cannot be skipped, it stops
            overflowed = tf.equal(loss, WEIGHTS_OVERFLOWED)
            self._note_stop(overflowed, loss)
            tf.debugging.Assert(tf.logical_not(overflowed), [NON_FINITE])
            bad = tf.logical_not(tf.math.is_finite(loss))
            self.skipped.assign_add(tf.cast(bad, tf.int64))
            self.skipped_in_a_row.assign(tf.where(bad, self.skipped_in_a_row + 1, 0))
            self.last_skipped.assign(tf.where(bad, self.train_counter, self.last_skipped))
            self._note_stop(self.skipped_in_a_row >= self.max_skipped, loss)
            tf.debugging.Assert(self.skipped_in_a_row < self.max_skipped, [NON_FINITE])
        self.summaries.batch("train", logs, self.train_counter)

    def _note_stop(self, stops, loss):
        """Record the counter and loss of this step if it `stops` the run and is the first to."""
        first = tf.logical_and(stops, tf.equal(self.stopped_at, 0))
        self.stopped_at.assign(tf.where(first, self.train_counter, self.stopped_at))
        self.stopped_loss.assign(tf.where(first, tf.cast(loss, tf.float32), self.stopped_loss))

    def _after_test_step(self, loss, logs):
        self.val_step.assign_add(1)
        self.summaries.batch("validation", logs, self.val_step)

    def _xla_program(self, stacked):
        """n train steps over `stacked` (each leaf `(n, batch, ...)`, n <= `XLA_UNROLL`), all
        in one XLA program.

        Returns the n losses, the n logs when TensorBoard is written (tensors of shape `(n,)`),
        and the last step's logs: an iterator cannot be read inside an XLA program, so the
        batches come stacked, and the summaries and finiteness checks, which XLA cannot run,
        follow outside. The steps are unrolled, not a loop: XLA on a CPU runs convolutions
        inside a while loop 20-50x slower than the same step alone (`docs/benchmarks.md`),
        unrolled as fast, and a dense model no slower.
        """
        losses, per_step = [], []
        for i in range(tf.nest.flatten(stacked)[0].shape[0]):
            loss, logs = self._one_train_step(tf.nest.map_structure(lambda t: t[i], stacked))  # noqa: B023
            losses.append(tf.cast(loss, tf.float32))
            if self.summaries.enabled:
                per_step.append({n: tf.cast(v, tf.float32) for n, v in logs.items()})
        names = list(per_step[0]) if per_step else []
        return tf.stack(losses), {n: tf.stack([p[n] for p in per_step]) for n in names}, logs

    def _xla_call(self, program, k, iterator):
        """Read k batches in the graph and run them through the XLA `program`, `XLA_UNROLL` steps
        per XLA program (a larger k runs several: the compilation grows with the steps
        unrolled, the speed does not); then, per step, the counter, the finiteness check and
        the batch summaries."""
        batches = [iterator.get_next() for _ in range(k)]
        parts = []
        for start in range(0, k, XLA_UNROLL):
            chunk = batches[start:start + XLA_UNROLL]
            parts.append(program(tf.nest.map_structure(lambda *leaves: tf.stack(leaves), *chunk)))
        losses = tf.concat([p[0] for p in parts], axis=0)
        logs = {n: tf.concat([p[1][n] for p in parts], axis=0) for n in parts[0][1]}
        last = parts[-1][2]
        if self.on_nan == "skip":  # every step ran (a skipped one changed nothing): count each
            for i in tf.range(k):
                self._after_train_step(losses[i], lambda: {n: v[i] for n, v in logs.items()})  # noqa: B023
            return tf.constant(k), last
        # Vectorized over the group (a graph loop costs tens of microseconds per iteration):
        # the counter and the last loss stop at the first non-finite step, which the check
        # then names; summaries are written one point per step.
        finite = tf.math.is_finite(losses)
        all_finite = tf.reduce_all(finite)
        ran = tf.where(all_finite, k, tf.cast(tf.argmin(tf.cast(finite, tf.int32)), tf.int32) + 1)
        if self.summaries.enabled:
            for i in tf.range(ran):
                self.summaries.batch("train", lambda: {n: v[i] for n, v in logs.items()},  # noqa: B023
                                     self.train_counter + tf.cast(i, tf.int64) + 1)
        self.train_counter.assign_add(tf.cast(ran, tf.int64))
        self.last_loss.assign(losses[ran - 1])
        self._note_stop(tf.logical_not(all_finite), losses[ran - 1])
        tf.debugging.Assert(all_finite, [NON_FINITE])
        return tf.constant(k), last

    @staticmethod
    def _loop(step, after, mode):
        """`run(iterator, steps)`: up to `steps` (an int32 tensor, `steps_tensor`) steps in one call,
        returning how many ran and the last step's logs.

        The first batch is read unconditionally (the logs' structure, which a model's own step
        decides, is known once a step has run): on an exhausted iterator the call raises
        `tf.errors.OutOfRangeError` having run nothing, as `fit`'s does.
        """

        def run(iterator, steps):
            loss, logs = step(iterator.get_next())
            after(loss, lambda: logs)
            done = tf.constant(1, tf.int32)
            for _ in tf.range(steps - 1):
                optional = iterator.get_next_as_optional()
                if not optional.has_value():
                    break
                loss, logs = step(optional.get_value())
                after(loss, lambda: logs)  # noqa: B023
                done += 1
            return done, logs

        return run if mode == "eager" else tf.function(run)

    def steps_tensor(self, steps):
        """`steps` as the int32 tensor `train_function` takes (one trace for every count)."""
        if steps not in self._step_counts:
            self._step_counts[steps] = tf.constant(steps, tf.int32)
        return self._step_counts[steps]

    # ---- bookkeeping ----

    def logs(self, last=None, prefix=""):
        """The logs of a pass as floats, names prefixed: the model's running metrics (`loss`
        and each metric), or, where a model's own step returned other names, its last logs
        `last`, as `fit` reports them. `last=None` after a pass that ran no step: `{}`, as
        `fit` reports an empty epoch, never a loss of 0."""
        metrics = self.model.get_metrics_result()
        if last is None:
            return {}
        if set(last) != set(metrics):
            metrics = last
        return {prefix + name: float(value) for name, value in metrics.items()}

    def reset(self):
        """Reset the running loss and metrics (at an epoch's start, before validation)."""
        self.model.reset_metrics()

    def write_text(self, tag, markdown):
        """A TensorBoard text summary `tag` in `train/`, at the current step."""
        self.summaries.text(tag, markdown, self.train_counter)

    def write_epoch(self, epoch, logs):
        """Per-epoch scalars: `epoch_<name>` at step `epoch`, validation names without `val_`."""
        self.summaries.epoch(epoch, logs)

    def state_variables(self):
        """Variables to checkpoint besides the model's and the optimizer's: the running loss
        and metric totals and the step counters."""
        return [*self.model.metrics_variables, self.val_step, self.train_counter]

    def evaluate(self, batches):
        """Run the test function over `batches` (`spec_impl.trainer.data.Batches` or a batched
        dataset); returns the `val_` logs as floats (`{}` for no batch)."""
        from spec_impl.trainer.data import Batches

        if not isinstance(batches, Batches):
            batches = Batches(batches)
        self.reset()
        iterator = self.iterator(batches.dataset)
        steps, k, last = batches.steps, self.steps_per_execution, None
        if steps is not None:  # a known length: no host read of the step count per call
            for first in range(0, steps, k):
                _, last = self.test_function(iterator, self.steps_tensor(min(k, steps - first)))
        else:
            while True:
                try:
                    done, last = self.test_function(iterator, self.steps_tensor(k))
                except tf.errors.OutOfRangeError:
                    break
                if int(done) < k:
                    break
        if last is None:
            warnings.warn(f"`{batches.name}` ran out of data: it has no batch, so the evaluation "
                          f"reports no loss or metrics (as fit).", stacklevel=2)
        return self.logs(last, prefix="val_")

    def fit(self, x=None, y=None, **kwargs):
        """Train with the custom loop, taking what `Model.fit` takes; see `spec_impl.train`.

        Returns:
            The `keras.callbacks.History` (also `model.history`).
        """
        return FitLoop(self, **kwargs).run(x, y)
