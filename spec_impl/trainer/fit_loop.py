"""`Trainer.fit`'s epoch loop (`FitLoop`), taking what `Model.fit` takes.

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
from spec_impl.trainer import keras_api
from spec_impl.trainer.batchnorm import recalibrate_batch_norm
from spec_impl.trainer.checkpointing import TrainingCheckpoint, remove_leftovers, run_settings
from spec_impl.trainer.checks import check_input_shape, check_labels, check_old_call
from spec_impl.trainer.distribute import check_created_in_scope, chief_path
from spec_impl.trainer.lock import CheckpointLock
from spec_impl.trainer.non_finite import NON_FINITE, WEIGHTS_OVERFLOWED
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
        backup_epoch = keras_api.backup_initial_epoch(model)
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
                if trainer.xla_function is not None and groupable and full - step >= k:
                    done, logs = trainer.xla_function(iterator)
                else:
                    done, logs = trainer.train_function(iterator, trainer.steps_tensor(expected))
            except tf.errors.OutOfRangeError:  # the data ran out before this call's first step
                done, logs = 0, None
            except tf.errors.InvalidArgumentError as error:
                if NON_FINITE not in error.message:
                    raise
                self._non_finite(epoch, skip - first_count, ckpt)
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

    def _non_finite(self, epoch, offset, ckpt):
        """Raise for the step the graph's check stopped at: the engine recorded its counter
        value and loss (`offset` maps the counter to the epoch's step)."""
        trainer = self.trainer
        where = _last_good(ckpt)
        failed, loss = offset + int(trainer.stopped_at.numpy()), float(trainer.stopped_loss.numpy())
        trainer.stopped_at.assign(0)  # a later fit of this trainer starts clean
        if loss == WEIGHTS_OVERFLOWED:
            self._check_weights(epoch, failed, where)
        after = "" if trainer.on_nan == "stop" else \
            f" ({trainer.max_skipped} consecutive steps skipped)"
        raise FloatingPointError(
            f"Non-finite loss {loss} at epoch {epoch + 1}, "
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
