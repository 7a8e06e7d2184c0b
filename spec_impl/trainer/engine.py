"""The training engine: `Trainer`, what `compile` holds and the compiled calls of its steps.

As Keras lays a trainer out: the numeric steps are `spec_impl.trainer.step` (`Steps`), the
counters and checks after each step `step_checks` (`StepChecks`), the calls of several steps
and the epoch's schedule `calls`, TensorBoard `summaries`; `Trainer.fit`
(`spec_impl.trainer.fit_loop`) runs the epochs with Keras callbacks, checkpoints and
validation. Its options are `spec_impl.options.TrainOptions`.

Corrections to the documents: `training=True` in the train step and `False` in the test step
(003's loop ignores it); validation scalars go to their own `validation/` writer (000 writes them
to the training writer); the regularization and `add_loss` terms are part of the loss.
"""

import contextlib
import dataclasses
import warnings

import keras
import tensorflow as tf

from spec_impl._validation import MODES, check_choice, check_positive_int
from spec_impl.options import AUTO, LOOP_OPTIONS, FitArguments, TrainOptions, field_names, split
from spec_impl.trainer import keras_api
from spec_impl.trainer.auto import Calibration, candidates
from spec_impl.trainer.calls import XLA_UNROLL, next_call, schedule, step_loop, xla_call, xla_program
from spec_impl.trainer.distribute import (
    check_optimizer_scope,
    check_xla_devices,
    distribute_dataset,
    strategy_or_none,
)
from spec_impl.trainer.fit_data import Batches
from spec_impl.trainer.fit_loop import FitLoop
from spec_impl.trainer.step import Steps
from spec_impl.trainer.step_checks import StepChecks
from spec_impl.trainer.summaries import Summaries

# Measured by `spec-impl bench` on a 2-core AMD EPYC (docs/benchmarks.md, 2026-12-07): XLA on a
# CPU ran the sequential CNN's step and its groups 1.7x slower than the function loop, and
# MiniInception's group no measurably faster (0.94 [0.77, 1.11]) after a 128 s compilation.
XLA_CPU_CONV_COST = ("ran the sequential CNN's steps 1.7x slower than mode='function' and "
                     "gained MiniInception nothing measurable after a 128 s compilation")


NO_JIT = "declares that it cannot be compiled with XLA"


def _without_xla(model, mode):
    """`mode` as `fit` would run it for `model`: a model with a layer that declares
    `supports_jit = False` (Keras's random augmentation layers, whose image ops have no XLA
    kernel) runs `"xla"` as `"function"` with a warning, as `fit(jit_compile=True)` does, and
    `"auto"` never times XLA for it."""
    if mode not in ("xla", AUTO) or keras_api.model_supports_jit(model):
        return mode, False
    if mode == "xla":
        layers = [f"{layer.name} ({type(layer).__name__})"
                  for layer in [model, *keras_api.all_layers(model)] if not layer.supports_jit]
        why = (f"{', '.join(layers)} {'sets' if len(layers) == 1 else 'set'} supports_jit=False"
               if layers else "TensorFlow's op determinism is enabled, which Keras does not "
                              "compile with XLA")
        warnings.warn(f"{type(model).__name__} {NO_JIT}: {why}. mode='xla' runs as "
                      f"mode='function', as fit(jit_compile=True) runs it without XLA.",
                      stacklevel=4)
        return "function", False
    return mode, True


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
    """The training engine: what `compile` holds, the compiled calls of the steps, and `fit`.

    Two levels, as in `fit`: the numeric step (`train_step(data)`, Keras's name; forward, loss,
    gradients, update, metrics) is compiled with XLA in `"xla"` mode as `compiled_train_step`;
    `train_function(iterator, steps)` runs up to k of them in one call, checks each loss and
    writes the batch summaries (`StepChecks`), and is compiled with `tf.function` but never with
    XLA (XLA has no kernel for summary writes). It returns the number of steps run and the last
    step's logs as tensors, so the caller needs no host synchronisation per step.
    `test_step` / `compiled_test_step` / `test_function` likewise. The compiled steps return
    `(loss, logs)`; `.traced` is the compiled step itself. A model's own `train_step` /
    `test_step` is called in place of the package's.

    The model is compiled with `optimizer`, `loss`, `metrics`, `loss_weights` and
    `weighted_metrics` (Keras then wraps the optimizer in a `LossScaleOptimizer` under
    `mixed_float16`); with none of them, a model that is already compiled keeps its settings.

    Args:
        model: a Keras model.
        optimizer, loss, metrics, loss_weights, weighted_metrics: as `compile` takes them;
            `optimizer="rmsprop"` when `loss` is given alone, as in `compile`.
        options: a `spec_impl.options.TrainOptions`; keyword arguments (`mode`,
            `steps_per_execution`, `log_dir`, `strategy`, `on_nan`, `max_skipped`, and the loop's
            options `fit` reads) replace its fields. See `spec_impl.train` for each. Under a
            strategy the steps run per replica (`strategy.run`), each replica's loss the share
            of the global batch's, and the model is compiled in the strategy's scope.
    """

    def __init__(self, model, *, optimizer=None, loss=None, metrics=None, loss_weights=None,
                 weighted_metrics=None, options=None, **kwargs):
        (given,) = split(kwargs, field_names(TrainOptions), caller="Trainer")
        self.options = dataclasses.replace(options or TrainOptions(), **given)  # checks `given`
        self.model = model
        self.strategy = strategy_or_none(self.options.strategy)
        self.steps = Steps(model, self.strategy, self.options.on_nan)
        if self.steps.custom_train_step and self.options.on_nan == "skip":
            raise ValueError(
                f"`on_nan='skip'` needs the package's own train step, and "
                f"{type(model).__name__} defines its own `train_step`: use on_nan='stop' (the "
                f"run stops at a non-finite `loss` it returns). Received: on_nan='skip'")
        mode, no_xla = _without_xla(model, self.options.mode)
        self.candidates = candidates(mode, self.options.steps_per_execution, self.strategy)
        if no_xla:  # mode="auto" for a model that declares supports_jit=False
            self.candidates = (tuple(m for m in self.candidates[0] if m != "xla"),
                               self.candidates[1])
        self._compile(dict(optimizer=optimizer, loss=loss, metrics=metrics,
                           loss_weights=loss_weights, weighted_metrics=weighted_metrics))
        self.summaries = Summaries(self.options.log_dir)
        self.checks = StepChecks(self.summaries, self.options.on_nan, self.options.max_skipped)
        self.train_step, self.test_step = self.steps.train_step, self.steps.test_step  # raw
        self._step_counts = {}
        self._train_spec = self.data_spec = None
        self._settings = {}  # (mode, k) -> that setting's compiled functions
        self._per_mode = {}  # mode -> the steps and loops every k of that mode shares
        self.configure(self.candidates[0][0], self.candidates[1][0])
        if mode == "xla":
            _warn_if_slow_xla(model)
        if model.built:
            self.build()

    def _compile(self, settings):
        """`model.compile(**settings)` in the strategy's scope (optimizer slots and metric
        totals are replica-aware variables), unless none is given and the model is compiled
        (then the model's own compile is used, as it is now: `self._settings_given` is `None`)."""
        self._settings_given = None
        with self.scope():
            if any(v is not None for v in settings.values()) or not self.model.compiled:
                if settings["optimizer"] is None:
                    settings["optimizer"] = "rmsprop"  # compile's default
                if self.strategy is not None and not isinstance(settings["optimizer"], str):
                    check_optimizer_scope(settings["optimizer"], self.strategy)
                self.model.compile(**settings)
                # the optimizer compile made: a re-compile keeps it and its state
                self._settings_given = {**settings, "optimizer": self.model.optimizer}
        self.optimizer = self.model.optimizer
        self._compiled = keras_api.compile_state(self.model)

    def _follow_compile(self):
        """Before a pass: when the model was compiled again since this `Trainer` traced its
        steps (by another `Trainer`, `train` or `model.compile`), the loss tracker, loss and
        metrics those steps read are gone, and the model's `get_metrics_result` reads the new
        ones, which they never update (a loss of 0.0). This `Trainer` then compiles the model
        again with its own settings (its optimizer and its state kept), or, made without
        settings, takes the model's new compile, as `fit` would; and traces its steps again."""
        state = keras_api.compile_state(self.model)
        if all(now is then for now, then in zip(state, self._compiled, strict=True)):
            return
        if self._settings_given is not None:
            with self.scope():
                self.model.compile(**self._settings_given)
        self.optimizer = self.model.optimizer
        self._compiled = keras_api.compile_state(self.model)
        self._settings.clear()
        self._per_mode.clear()
        self.configure(self.mode, self.steps_per_execution)
        if self.model.built:
            self.build()

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

        Sets `compiled_train_step` / `compiled_test_step` (one step each, compiled for the
        mode, per replica under a strategy), `train_function` / `test_function` (up to k steps
        per call) and, in `"xla"` mode with k > 1 on one device, `xla_function` (k steps in XLA
        programs of up to `XLA_UNROLL` steps each, `xla_program`), else `xla_function = None`.
        A setting is checked once, when first configured.
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
            train_step = self.steps.compiled("train", step_mode, self._train_spec)
            test_step = self.steps.compiled("test", step_mode)
            program = None
            if mode == "xla" and self.strategy is None:
                program = xla_program(self.steps.one_train_step, self.summaries.enabled)
            self._per_mode[mode] = {
                "compiled_train_step": train_step, "compiled_test_step": test_step,
                "train_function": step_loop(train_step, self.checks.after_train_step, mode),
                "test_function": step_loop(test_step, self.checks.after_test_step, mode),
                "xla_program": program}
        functions = {**self._per_mode[mode], "xla_function": None}
        program = functions["xla_program"]
        if program is not None and k > 1:
            functions["xla_function"] = xla_call(program, k, self.checks.after_train_group)
        return functions

    def build(self, element_spec=None):
        """Create every variable before the first step, as `fit` does: the model's (from
        `element_spec`, the batches' spec, when it is not built), the compiled loss and
        metrics', and the optimizer's. A model with its own `train_step` creates what it
        needs in its first step, as under `fit` (a GAN has no `call` to build with, and
        optimizers of its own)."""
        if element_spec is not None:
            self.data_spec = element_spec  # the training batches' (what a step is traced for)
        if self.steps.custom_train_step:
            if element_spec is not None:
                with self.scope():
                    self.steps.create_variables(element_spec, self.compiled_train_step)
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

    # ---- calls ----

    def train_call(self, iterator, call):
        """Run one `spec_impl.trainer.calls.Call` of training: through the XLA group when the
        call is grouped and the setting has one, else `train_function`. Returns `(steps run,
        the last step's logs)` as tensors."""
        if call.grouped and self.xla_function is not None:
            return self.xla_function(iterator)
        return self.train_function(iterator, self.steps_tensor(call.steps))

    def steps_tensor(self, steps):
        """`steps` as the int32 tensor `train_function` takes (one trace for every count)."""
        if steps not in self._step_counts:
            self._step_counts[steps] = tf.constant(steps, tf.int32)
        return self._step_counts[steps]

    def evaluate(self, batches, epoch=None):
        """Run the test function over `batches` (`spec_impl.trainer.fit_data.Batches` or a batched
        dataset); returns the `val_` logs as floats (`{}` for no batch, with a warning that
        names the `epoch`, from 0, when given)."""
        if not isinstance(batches, Batches):
            batches = Batches(batches)
        self._follow_compile()
        self.reset()
        iterator = self.iterator(batches.dataset)
        k, last = self.steps_per_execution, None
        if batches.steps is not None:  # a known length: no host read of the step count per call
            for call in schedule(batches.steps, k):
                _, last = self.test_function(iterator, self.steps_tensor(call.steps))
        else:
            call = next_call(0, None, k)
            while True:
                try:
                    done, last = self.test_function(iterator, self.steps_tensor(call.steps))
                except tf.errors.OutOfRangeError:
                    break
                if int(done) < call.steps:
                    break
        if last is None:
            where = "" if epoch is None else f" after epoch {epoch + 1}"
            warnings.warn(f"`{batches.name}` ran out of data: it has no batch, so the evaluation"
                          f"{where} reports no loss or metrics (as fit).", stacklevel=2)
        return self.logs(last, prefix="val_")

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
        self.summaries.text(tag, markdown, self.checks.train_counter)

    def state_variables(self):
        """Variables to checkpoint besides the model's and the optimizer's: the running loss
        and metric totals and the step counters."""
        return [*self.model.metrics_variables, *self.checks.variables()]

    def fit(self, x=None, y=None, **arguments):
        """Train with the custom loop, taking what `Model.fit` takes and the loop's options
        (`checkpoint_dir`, `checkpoint_every`, `num_classes`, `recalibrate_bn`); see
        `spec_impl.train`.

        Returns:
            The `keras.callbacks.History` (also `model.history`).
        """
        fitting, loop = split(arguments, field_names(FitArguments), LOOP_OPTIONS, caller="fit")
        options = dataclasses.replace(self.options, **loop)
        self._follow_compile()
        return FitLoop(self, FitArguments(**fitting), options).run(x, y)
