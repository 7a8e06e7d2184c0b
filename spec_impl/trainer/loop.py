"""`train` and `Trainer.fit`: the epoch loop, taking what `Model.fit` takes.

Epochs -> calls of `Trainer.train_function` (k steps each) -> Keras callbacks (the progress
bar and the history are Keras's `ProgbarLogger` and `History`), TensorBoard epoch scalars,
checkpoints (resumed from), batch-norm recalibration, validation.
"""

import contextlib
import dataclasses
import signal
import time
import warnings

import keras
import tensorflow as tf

from spec_impl.saving import non_finite_weights
from spec_impl.trainer import data as data_lib
from spec_impl.trainer.batchnorm import recalibrate_batch_norm
from spec_impl.trainer.checkpointing import TrainingCheckpoint, remove_leftovers, run_settings
from spec_impl.trainer.checks import check_input_shape, check_labels, check_old_call
from spec_impl.trainer.distribute import check_created_in_scope, chief_path, explicit
from spec_impl.trainer.engine import MAX_SKIPPED, NON_FINITE, WEIGHTS_OVERFLOWED, Trainer
from spec_impl.trainer.lock import CheckpointLock
from spec_impl.trainer.preemption import PreemptionWatch, TrainingPreempted


@dataclasses.dataclass
class FitOptions:
    """What `fit` takes besides the data, and what `train` adds (see `train`)."""

    batch_size: int = None
    epochs: int = 1
    verbose: object = "auto"
    callbacks: list = None
    validation_split: float = 0.0
    validation_data: object = None
    shuffle: bool = True
    class_weight: dict = None
    sample_weight: object = None
    initial_epoch: int = 0
    steps_per_epoch: int = None
    validation_steps: int = None
    validation_batch_size: int = None
    validation_freq: object = 1
    checkpoint_dir: str = None
    checkpoint_every: int = None
    num_classes: int = None
    recalibrate_bn: bool = False


def _last_good(ckpt):
    """`"; the last good checkpoint is ..."` for a failure's message, or `""` without one."""
    latest = None if ckpt is None else ckpt.latest
    return f"; the last good checkpoint is {latest}" if latest else ""


def _should_validate(epoch, freq):
    """`fit`'s `validation_freq`: every `freq` epochs, or the epochs (from 1) listed."""
    if isinstance(freq, int):
        return (epoch + 1) % freq == 0
    return epoch + 1 in freq


class FitLoop:
    """One `Trainer.fit` call: resolves its data, callbacks and checkpoint, then runs epochs."""

    def __init__(self, trainer, **options):
        self.trainer = trainer
        self.model = trainer.model
        self.options = FitOptions(**options)
        if self.options.verbose == "auto":
            self.options.verbose = 1

    # ---- set-up ----

    def _data(self, x, y):
        o = self.options
        weights = o.sample_weight
        validation = o.validation_data
        if o.validation_split and validation is None:
            (x, y, weights), validation = data_lib.split_for_validation(x, y, weights,
                                                                        o.validation_split)
        train = data_lib.batches(x, y, weights, batch_size=o.batch_size, shuffle=o.shuffle,
                                 class_weight=o.class_weight, steps_per_epoch=o.steps_per_epoch)
        val = None if validation is None else data_lib.validation_batches(
            validation, batch_size=o.validation_batch_size or o.batch_size,
            steps=o.validation_steps)
        return train, val

    def _check(self, train, val):
        """Refuse bad data before the first step (`spec_impl.trainer.checks`), build every
        variable, and refuse a model built outside the strategy's scope."""

        sides = [b for b in (train, val) if b is not None]
        for batches in sides:
            check_input_shape(self.model, batches.dataset.element_spec)
        self.trainer.build(train.dataset.element_spec)
        for batches in sides:
            check_labels(self.model, batches, getattr(self.model, "loss", None),
                         self.options.num_classes)
        if self.trainer.strategy is not None:
            check_created_in_scope(self.model, self.trainer.strategy)

    # ---- the run ----

    def run(self, x, y):
        """Train; returns the `keras.callbacks.History` (also set as `model.history`)."""
        o = self.options
        check_old_call(self.model, x, y)
        train, val = self._data(x, y)
        self._check(train, val)
        strategy = self.trainer.strategy
        with contextlib.ExitStack() as stack:  # a non-chief worker's folder is removed at the end
            write_dir = stack.enter_context(chief_path(o.checkpoint_dir, strategy))
            ckpt = None
            if o.checkpoint_dir is not None:
                lock = stack.enter_context(CheckpointLock(write_dir))  # one run per folder
                remove_leftovers(write_dir)  # of writes killed midway, now that none is in flight
                ckpt = TrainingCheckpoint(o.checkpoint_dir, self.trainer, write_directory=write_dir,
                                          settings=run_settings(self.trainer, train.batch_size),
                                          lock=lock)
            self.watch = stack.enter_context(PreemptionWatch(strategy))
            return self._epochs(train, val, ckpt)

    def _preempted(self, ckpt, epoch, step, save):
        """Stop on SIGTERM: checkpoint at (`epoch`, `step`) if `save` and raise."""
        if save and ckpt is not None:
            ckpt.save(epoch, step)
        raise TrainingPreempted(epoch, step, None if ckpt is None else ckpt.latest,
                                self.watch.signal or signal.SIGTERM)

    def _epochs(self, train, val, ckpt):
        o, model, trainer = self.options, self.model, self.trainer
        callbacks = keras.callbacks.CallbackList(
            o.callbacks, add_history=True, add_progbar=o.verbose != 0, verbose=o.verbose,
            epochs=o.epochs, steps=train.steps, model=model)
        model.stop_training = False
        restored = None if ckpt is None else ckpt.restore_latest()
        start_epoch, start_step = (o.initial_epoch, 0) if restored is None else restored
        left = None if train.steps is None else max(0, (o.epochs - start_epoch) * train.steps - start_step)
        self.calibration = trainer.calibration(train.steps, left)
        callbacks.on_train_begin()
        if self.calibration is not None and ckpt is not None \
                and self.calibration.restore(ckpt.directory):
            self._chosen(callbacks, ckpt)
        # BackupAndRestore restores in on_train_begin and sets where to resume, as under fit.
        backup_epoch = getattr(model, "_initial_epoch", None)
        if backup_epoch and start_step == 0:
            start_epoch = max(start_epoch, backup_epoch)
        epoch_logs = {}
        for epoch in range(start_epoch, o.epochs):
            skip = start_step if epoch == start_epoch else 0
            if skip == 0:
                trainer.reset()
            callbacks.on_epoch_begin(epoch)
            last = self._train_epoch(train, epoch, skip, callbacks, ckpt)
            if last is None and skip:  # resumed at the epoch's end: its running logs were restored
                last = trainer.model.get_metrics_result()
            elif last is None:
                warnings.warn(f"`{train.name}` ran out of data: epoch {epoch + 1} trained on no "
                              f"batch and reports no loss or metrics (as fit).", stacklevel=2)
            epoch_logs = trainer.logs(last)
            if o.recalibrate_bn:
                recalibrate_batch_norm(model, train.dataset)
            if val is not None and _should_validate(epoch, o.validation_freq):
                callbacks.on_test_begin()
                val_logs = trainer.evaluate(val)
                callbacks.on_test_end({k[len("val_"):]: v for k, v in val_logs.items()})
                epoch_logs.update(val_logs)
            trainer.write_epoch(epoch, epoch_logs)
            if ckpt is not None:
                ckpt.save(epoch + 1, 0)
            callbacks.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
            if self.watch.stop_now() and epoch + 1 < o.epochs:  # the checkpoint is written
                self._preempted(ckpt, epoch + 1, 0, save=False)
        if self.calibration is not None and not self.calibration.done:  # a run too short
            self.calibration.finish()
            self._chosen(callbacks, ckpt)
        if o.epochs > 0 and isinstance(trainer.optimizer, keras.optimizers.Optimizer):
            trainer.optimizer.finalize_variable_values(model.trainable_weights)  # use_ema, as fit
        callbacks.on_train_end(epoch_logs)
        return model.history

    def _train_epoch(self, train, epoch, skip, callbacks, ckpt):
        """One epoch of calls of `trainer.train_function`, from step `skip` on; returns the
        last call's logs (`None` if no step ran).

        The host reads nothing from the device per call when the epoch's length is known: the
        logs stay tensors (callbacks convert them, as under `fit`).
        """
        trainer = self.trainer
        iterator, steps = train.start_epoch(trainer, epoch, skip)
        first_count = int(trainer.train_counter.numpy())
        skipped = int(trainer.skipped.numpy())
        step, last = skip, None
        # mode="xla", k > 1: groups of k full batches in one XLA program (a partial last
        # batch cannot be stacked with full ones; unless the data are arrays that divide into
        # batches, the last batch counts as partial); the rest, step by step.
        groupable = train.length is not None and train.steps_per_epoch is None
        full = None if steps is None else steps if train.last_full else steps - 1
        while steps is None or step < steps:
            setting = self._setting()  # mode="auto": the setting this call runs (and times)
            k = trainer.steps_per_execution
            callbacks.on_train_batch_begin(step)
            expected = k if steps is None else min(k, steps - step)  # never past the epoch's end
            started = time.perf_counter()
            try:
                if trainer.group_function is not None and groupable and full - step >= k:
                    done, logs = trainer.group_function(iterator)
                else:
                    done, logs = trainer.train_function(iterator, trainer.steps_tensor(expected))
            except tf.errors.OutOfRangeError:  # the data ran out before this call's first step
                done, logs = 0, None
            except tf.errors.InvalidArgumentError as error:
                if NON_FINITE not in error.message:
                    raise
                self._non_finite(epoch, skip + int(trainer.train_counter.numpy()) - first_count,
                                 ckpt)
            ran = expected if train.length is not None else int(done)  # no host read per call
            train.advance(ran, expected)
            if ran == 0:
                break
            if setting is not None:
                self._timed(setting, started, ran, callbacks, ckpt)
            previous, step, last = step, step + ran, logs
            if trainer.on_nan == "skip":  # a host read per call, in this mode only
                skipped = self._warn_skipped(trainer, skipped, epoch, skip - first_count)
            callbacks.on_train_batch_end(step - 1, logs)
            if ckpt is not None and self.options.checkpoint_every \
                    and step // self.options.checkpoint_every > previous // self.options.checkpoint_every:
                ckpt.save(epoch, step)
            if ran < expected or self.model.stop_training:
                break
            if self.watch.stop_now() and (steps is None or step < steps):
                self._preempted(ckpt, epoch, step, save=True)  # else: at the epoch's end
        train.end_epoch(step)
        return last

    # ---- mode="auto" / steps_per_execution="auto" (spec_impl.trainer.auto) ----

    def _setting(self):
        """While calibrating: switch the trainer to the setting of the next call and return it;
        otherwise `None`."""
        calibration = self.calibration
        if calibration is None or calibration.done:
            return None
        self.trainer.configure(*calibration.current)
        return calibration.current

    def _timed(self, setting, started, ran, callbacks, ckpt):
        """Record a calibration call's time (the loss read back first: the call has finished),
        and once the choice is made, take it."""
        float(self.trainer.last_loss.numpy())
        self.calibration.record(setting, time.perf_counter() - started, ran)
        if self.calibration.done:
            self._chosen(callbacks, ckpt)

    def _chosen(self, callbacks, ckpt):
        """Run the rest in the chosen setting, and say so: `History.params["execution"]`, a
        line of progress output, TensorBoard's text summary `execution`, and the checkpoint
        folder's `execution.json` (a resumed run keeps the choice)."""
        calibration, trainer = self.calibration, self.trainer
        trainer.configure(*calibration.choice)
        callbacks.params["execution"] = calibration.report()
        if self.options.verbose:
            print("\n" + calibration.summary(), flush=True)
        trainer.write_text("execution", calibration.markdown())
        if ckpt is not None and calibration.source == "calibration":
            calibration.save(ckpt.write_directory)

    def _non_finite(self, epoch, failed, ckpt):
        trainer = self.trainer
        where = _last_good(ckpt)
        if float(trainer.last_loss.numpy()) == WEIGHTS_OVERFLOWED:
            self._check_weights(epoch, failed, where)
        after = "" if trainer.on_nan == "stop" else \
            f" ({trainer.max_skipped} consecutive steps skipped)"
        raise FloatingPointError(
            f"Non-finite loss {float(trainer.last_loss.numpy())} at epoch {epoch + 1}, "
            f"step {failed}{after}: training stopped, no checkpoint written after it{where}"
        ) from None

    def _check_weights(self, epoch, step, where):
        """Stop when a weight is not finite: an update that overflowed cannot be skipped (it
        has been applied), and its weights are never saved."""
        weights = non_finite_weights(self.model)
        if weights:
            raise FloatingPointError(
                f"{weights} after epoch {epoch + 1}, step {step}: the optimizer's update "
                f"overflowed (check the learning rate and the optimizer's epsilon); training "
                f"stopped, no checkpoint written after it{where}")

    @staticmethod
    def _warn_skipped(trainer, before, epoch, offset):
        """Warn about the steps `on_nan="skip"` left out in the last call; returns the total."""
        now = int(trainer.skipped.numpy())
        if now > before:
            last = offset + int(trainer.last_skipped.numpy())
            warnings.warn(f"Skipped {now - before} step(s) with a non-finite loss or gradient "
                          f"in epoch {epoch + 1}, the last at step {last}: their updates were "
                          f"not applied and they are left out of the epoch's loss and metrics.",
                          RuntimeWarning, stacklevel=2)
        return now


def _refuse_old_call(model, x, y):
    """`train(model, (x, y))`, the form before `train` took `fit`'s arguments, passes the pair
    as two inputs; a model of one input cannot take them, so name the new form."""
    inputs = getattr(model, "inputs", None) if getattr(model, "built", False) else None
    if y is None and isinstance(x, tuple) and len(x) == 2 and inputs is not None and len(inputs) == 1:
        raise TypeError("train(model, (x, y)) passes the pair as two inputs, and the model takes "
                        "one. Expected train(model, x, y, ...), as model.fit(x, y, ...).")


def train(model, x=None, y=None, *, batch_size=None, epochs=1, verbose="auto", callbacks=None,
          validation_split=0.0, validation_data=None, shuffle=True, class_weight=None,
          sample_weight=None, initial_epoch=0, steps_per_epoch=None, validation_steps=None,
          validation_batch_size=None, validation_freq=1, optimizer=None, loss=None, metrics=None,
          loss_weights=None, weighted_metrics=None, mode="function", steps_per_execution=1,
          log_dir=None, checkpoint_dir=None, checkpoint_every=None, num_classes=None,
          recalibrate_bn=False, strategy=None, on_nan="stop", max_skipped=MAX_SKIPPED):
    """Train `model` with the package's custom loop, as `model.compile(...)` + `model.fit(...)`.

    Every argument of `fit` has its name and meaning here, and `compile`'s `optimizer`, `loss`,
    `metrics`, `loss_weights` and `weighted_metrics` are resolved by `compile` itself (without
    them an already compiled model keeps its own). A model that overrides `train_step` or
    `test_step` trains with its own step, as under `fit` (`on_nan="skip"` is refused for it).
    What the loop adds:

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
    _refuse_old_call(model, x, y)
    strategy = explicit(strategy)
    with contextlib.ExitStack() as stack:  # a non-chief worker's folder is removed at the end
        log_dir = stack.enter_context(chief_path(log_dir, strategy))
        trainer = Trainer(model, optimizer=optimizer, loss=loss, metrics=metrics,
                          loss_weights=loss_weights, weighted_metrics=weighted_metrics, mode=mode,
                          steps_per_execution=steps_per_execution, log_dir=log_dir,
                          strategy=strategy, on_nan=on_nan, max_skipped=max_skipped)
        return trainer.fit(
            x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
            validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
            class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
            validation_batch_size=validation_batch_size, validation_freq=validation_freq,
            checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
            num_classes=num_classes, recalibrate_bn=recalibrate_bn)
