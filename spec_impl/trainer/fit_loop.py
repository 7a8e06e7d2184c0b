"""`Trainer.fit`'s epoch loop (`FitLoop`), taking what `Model.fit` takes.

Epochs -> calls (`spec_impl.trainer.calls.next_call`, run by `Trainer.train_call`) -> Keras
callbacks (the progress bar and the history are Keras's `ProgbarLogger` and `History`),
TensorBoard epoch scalars, checkpoints (resumed from), batch-norm recalibration, validation.
"""

import contextlib
import dataclasses
import signal
import time
import warnings

import keras
import tensorflow as tf

from spec_impl.trainer import fit_data, keras_api
from spec_impl.trainer.batchnorm import recalibrate_batch_norm
from spec_impl.trainer.calls import next_call
from spec_impl.trainer.checkpointing import TrainingCheckpoint, remove_leftovers, run_settings
from spec_impl.trainer.distribute import check_created_in_scope, chief_path
from spec_impl.trainer.input_checks import check_input_shape, check_labels, check_old_call
from spec_impl.trainer.lock import CheckpointLock
from spec_impl.trainer.non_finite import raise_non_finite, unless_all_skipped, warn_skipped
from spec_impl.trainer.preemption import PreemptionWatch, TrainingPreempted


def _should_validate(epoch, freq):
    """`fit`'s `validation_freq`: every `freq` epochs, or the epochs (from 1) listed."""
    if isinstance(freq, int):
        return (epoch + 1) % freq == 0
    return epoch + 1 in freq


class FitLoop:
    """One `Trainer.fit` call: resolves its data, callbacks and checkpoint, then runs epochs.

    Args:
        trainer: the `Trainer`.
        fit: the `spec_impl.options.FitArguments` of the call.
        options: the `spec_impl.options.TrainOptions` of the run (the loop reads
            `checkpoint_dir`, `checkpoint_every`, `num_classes` and `recalibrate_bn`).
    """

    def __init__(self, trainer, fit, options):
        self.trainer = trainer
        self.model = trainer.model
        self.fit = fit if fit.verbose != "auto" else dataclasses.replace(fit, verbose=1)
        self.options = options

    # ---- set-up ----

    def _data(self, x, y):
        f = self.fit
        weights = f.sample_weight
        validation = f.validation_data
        if f.validation_split and validation is None:
            (x, y, weights), validation = fit_data.split_for_validation(x, y, weights,
                                                                        f.validation_split)
        train = fit_data.batches(x, y, weights, batch_size=f.batch_size, shuffle=f.shuffle,
                                 class_weight=f.class_weight, steps_per_epoch=f.steps_per_epoch)
        val = None if validation is None else fit_data.validation_batches(
            validation, batch_size=f.validation_batch_size or f.batch_size,
            steps=f.validation_steps)
        return train, val

    def _check(self, train, val):
        """Refuse bad data before the first step (`spec_impl.trainer.input_checks`), build every
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
            self.ckpt = None
            if o.checkpoint_dir is not None:
                lock = stack.enter_context(CheckpointLock(write_dir))  # one run per folder
                remove_leftovers(write_dir)  # of writes killed midway, now that none is in flight
                self.ckpt = TrainingCheckpoint(
                    o.checkpoint_dir, self.trainer, write_directory=write_dir,
                    settings=run_settings(self.trainer, train.batch_size), lock=lock)
            self.watch = stack.enter_context(PreemptionWatch(strategy))
            self.callbacks = keras.callbacks.CallbackList(
                self.fit.callbacks, add_history=True, add_progbar=self.fit.verbose != 0,
                verbose=self.fit.verbose, epochs=self.fit.epochs, steps=train.steps,
                model=self.model)
            return self._epochs(train, val)

    def _preempted(self, epoch, step, save):
        """Stop on SIGTERM: checkpoint at (`epoch`, `step`) if `save` and raise."""
        ckpt = self.ckpt
        if save and ckpt is not None:
            ckpt.save(epoch, step)
        raise TrainingPreempted(epoch, step, None if ckpt is None else ckpt.latest,
                                self.watch.signal or signal.SIGTERM)

    def _start(self, train):
        """Where the run starts, `(epoch, step)`: `initial_epoch`, the latest checkpoint, or
        where `BackupAndRestore` restored (in `on_train_begin`, as under fit); the calibration
        of `mode="auto"` is made for the steps left and restored from the checkpoint folder."""
        ckpt, epochs = self.ckpt, self.fit.epochs
        restored = None if ckpt is None else ckpt.restore_latest()
        epoch, step = (self.fit.initial_epoch, 0) if restored is None else restored
        left = None if train.steps is None else max(0, (epochs - epoch) * train.steps - step)
        self.calibration = self.trainer.calibration(train.steps, left)
        self.callbacks.on_train_begin()
        if self.calibration is not None and ckpt is not None \
                and self.calibration.restore(ckpt.directory):
            self._chosen()
        backup_epoch = keras_api.backup_initial_epoch(self.model)
        if backup_epoch and step == 0:
            epoch = max(epoch, backup_epoch)
        return epoch, step

    def _epochs(self, train, val):
        model, trainer, callbacks = self.model, self.trainer, self.callbacks
        model.stop_training = False
        start_epoch, start_step = self._start(train)
        epoch_logs = {}
        for epoch in range(start_epoch, self.fit.epochs):
            skip = start_step if epoch == start_epoch else 0
            if skip == 0:
                trainer.reset()
            callbacks.on_epoch_begin(epoch)
            epoch_logs = self._epoch_logs(train, val, epoch, self._train_epoch(train, epoch, skip),
                                          resumed_at_end=skip > 0)
            trainer.summaries.epoch(epoch, epoch_logs)
            if self.ckpt is not None:
                self.ckpt.save(epoch + 1, 0)
            callbacks.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
            if self.watch.stop_now() and epoch + 1 < self.fit.epochs:  # the checkpoint is written
                self._preempted(epoch + 1, 0, save=False)
        if self.calibration is not None and not self.calibration.done:  # a run too short
            self.calibration.finish()
            self._chosen()
        if self.fit.epochs > 0 and isinstance(trainer.optimizer, keras.optimizers.Optimizer):
            trainer.optimizer.finalize_variable_values(model.trainable_weights)  # use_ema, as fit
        callbacks.on_train_end(epoch_logs)
        return model.history

    def _epoch_logs(self, train, val, epoch, last, resumed_at_end):
        """The epoch's logs from its last call's `last` logs, after batch-norm recalibration
        and validation."""
        if last is None and resumed_at_end:  # resumed at the epoch's end: its logs were restored
            last = self.model.get_metrics_result()
        elif last is None:
            warnings.warn(f"`{train.name}` ran out of data: epoch {epoch + 1} trained on no "
                          f"batch and reports no loss or metrics (as fit).", stacklevel=3)
        logs = self.trainer.logs(last)
        if last is not None and self.trainer.options.on_nan == "skip":
            logs = unless_all_skipped(self.model, logs, epoch)
        if self.options.recalibrate_bn:
            recalibrate_batch_norm(self.model, train.dataset)
        if val is not None and _should_validate(epoch, self.fit.validation_freq):
            self.callbacks.on_test_begin()
            val_logs = self.trainer.evaluate(val, epoch=epoch)
            self.callbacks.on_test_end({k[len("val_"):]: v for k, v in val_logs.items()})
            logs.update(val_logs)
        return logs

    def _train_epoch(self, train, epoch, skip):
        """One epoch of calls (`spec_impl.trainer.calls.next_call`) from step `skip` on;
        returns the last call's logs (`None` if no step ran).

        The host reads nothing from the device per call when the epoch's length is known: the
        logs stay tensors (callbacks convert them, as under `fit`). In `"xla"` mode with k > 1,
        calls of k full batches go through the XLA group (a partial last batch cannot be stacked
        with full ones; unless the data are arrays that divide into batches, the last batch
        counts as partial).
        """
        trainer = self.trainer
        iterator, steps = train.start_epoch(trainer, epoch, skip)
        offset = skip - int(trainer.checks.train_counter.numpy())  # counter -> the epoch's step
        skipped = int(trainer.checks.skipped.numpy())
        full = None
        if train.length is not None and train.steps_per_epoch is None:
            full = steps if train.last_full else steps - 1
        step, last = skip, None
        while steps is None or step < steps:
            setting = self._setting()  # mode="auto": the setting this call runs (and times)
            call = next_call(step, steps, trainer.steps_per_execution, full)
            self.callbacks.on_train_batch_begin(step)
            started = time.perf_counter()
            done, logs = self._call(iterator, call, epoch, offset)
            ran = call.steps if train.length is not None else int(done)  # no host read per call
            train.advance(ran, call.steps)
            if ran == 0:
                break
            if setting is not None:
                self._timed(setting, started, ran)
            previous, step, last = step, step + ran, logs
            if trainer.options.on_nan == "skip":  # a host read per call, in this mode only
                skipped = warn_skipped(trainer.checks, skipped, epoch, offset)
            self.callbacks.on_train_batch_end(step - 1, logs)
            self._after_call(epoch, previous, step)
            if ran < call.steps or self.model.stop_training:
                break
            if self.watch.stop_now() and (steps is None or step < steps):
                self._preempted(epoch, step, save=True)  # else: at the epoch's end
        train.end_epoch(step)
        return last

    def _call(self, iterator, call, epoch, offset):
        """`trainer.train_call`; `(0, None)` when the data ran out before the call's first
        step; a `FloatingPointError` for the step a check stopped at."""
        try:
            return self.trainer.train_call(iterator, call)
        except tf.errors.OutOfRangeError:
            return 0, None
        except tf.errors.InvalidArgumentError:
            stop = self.trainer.checks.stop()
            if stop is None:  # not a check of the loop's: the error is the model's own
                raise
            raise_non_finite(self.model, self.trainer.checks, epoch, offset + stop[0], stop[1],
                             self.ckpt)

    def _after_call(self, epoch, previous, step):
        """Checkpoint at the call that reaches a multiple of `checkpoint_every`."""
        every = self.options.checkpoint_every
        if self.ckpt is not None and every and step // every > previous // every:
            self.ckpt.save(epoch, step)

    # ---- mode="auto" / steps_per_execution="auto" (spec_impl.trainer.auto) ----

    def _setting(self):
        """While calibrating: switch the trainer to the setting of the next call and return it;
        otherwise `None`."""
        calibration = self.calibration
        if calibration is None or calibration.done:
            return None
        self.trainer.configure(*calibration.current)
        return calibration.current

    def _timed(self, setting, started, ran):
        """Record a calibration call's time (the loss read back first: the call has finished),
        and once the choice is made, take it."""
        float(self.trainer.checks.last_loss.numpy())
        self.calibration.record(setting, time.perf_counter() - started, ran)
        if self.calibration.done:
            self._chosen()

    def _chosen(self):
        """Run the rest in the chosen setting, and say so: `History.params["execution"]`, a
        line of progress output, TensorBoard's text summary `execution`, and the checkpoint
        folder's `execution.json` (a resumed run keeps the choice)."""
        calibration, trainer = self.calibration, self.trainer
        trainer.configure(*calibration.choice)
        self.callbacks.params["execution"] = calibration.report()
        if self.fit.verbose:
            print("\n" + calibration.summary(), flush=True)
        trainer.write_text("execution", calibration.markdown())
        if self.ckpt is not None and calibration.source == "calibration":
            calibration.save(self.ckpt.write_directory)
