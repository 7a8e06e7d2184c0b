"""One worker of the multi-worker tests: `python distributed_worker.py OUT [--pause-at STEP]`.

The test starts two of these with a `TF_CONFIG` each. They train the MNIST MLP (no dropout) on
the first digits with `MultiWorkerMirroredStrategy`, the package's loop and SGD, checkpointing
every `CHECKPOINT_EVERY` steps into OUT/checkpoints (resuming from there), logging to OUT/logs,
and the chief saves OUT/model.keras and OUT/weights.npz. With `--pause-at STEP` the worker
(worker 1 only) writes OUT/paused-worker-1 once STEP steps are checkpointed and then sleeps,
to be killed. With `--mark-at STEP` it writes that marker as step STEP's call starts and
sleeps `MARK_SLEEP` seconds, for the test to send it a SIGTERM; a preempted worker exits with
`PREEMPTED_EXIT_CODE`, as `spec-impl train` does.
"""

import argparse
import json
import os
import pathlib
import time

import numpy as np

SAMPLES, BATCH, EPOCHS, CHECKPOINT_EVERY, LEARNING_RATE, SEED = 96, 16, 2, 2, 0.1, 7
MARK_SLEEP = 2.0  # seconds


def data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:SAMPLES] / 16.0).astype("float32"), y[:SAMPLES].astype("int64")


def build():
    import keras

    from spec_impl import get_mnist_model

    keras.utils.set_random_seed(SEED)
    return get_mnist_model(64, 10, dropout=0)


def fit_settings():
    import keras

    return dict(loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(LEARNING_RATE),
                metrics=["accuracy"], epochs=EPOCHS, batch_size=BATCH, verbose=0)


class Pause:
    """Sleep at the first step after `step` (its checkpoint written), leaving a marker file."""

    def __new__(cls, step, marker):
        import keras

        class _Pause(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch >= step:
                    pathlib.Path(marker).write_text(str(batch))
                    time.sleep(600)

        return _Pause()


class Mark:
    """Write `marker` as the call of step `step` starts, then sleep `MARK_SLEEP` seconds."""

    def __new__(cls, step, marker):
        import keras

        class _Mark(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                if batch == step and not os.path.exists(marker):
                    pathlib.Path(marker).write_text(str(batch))
                    time.sleep(MARK_SLEEP)

        return _Mark()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--pause-at", type=int, default=None)
    parser.add_argument("--mark-at", type=int, default=None)
    args = parser.parse_args()
    from spec_impl import make_strategy, save_model_atomic, train
    from spec_impl.trainer.distribute import chief_path, is_chief

    strategy = make_strategy("multiworker")
    with strategy.scope():  # the model and its optimizer
        model = build()
        settings = fit_settings()
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    marker = os.path.join(args.out, f"paused-{task['type']}-{task['index']}")
    pause = args.pause_at is not None and task["index"] == 1
    callbacks = [Pause(args.pause_at, marker)] if pause else []
    if args.mark_at is not None and task["index"] == 1:
        callbacks.append(Mark(args.mark_at, marker))
    from spec_impl.trainer.preemption import PREEMPTED_EXIT_CODE, TrainingPreempted

    try:
        history = train(model, *data(), shuffle=False, strategy=strategy,
                        log_dir=os.path.join(args.out, "logs"),
                        checkpoint_dir=os.path.join(args.out, "checkpoints"),
                        checkpoint_every=CHECKPOINT_EVERY, callbacks=callbacks, **settings).history
    except TrainingPreempted as e:
        print(e, flush=True)
        raise SystemExit(PREEMPTED_EXIT_CODE) from None
    with chief_path(os.path.join(args.out, "model.keras"), strategy) as path:
        save_model_atomic(model, path)
    if is_chief(strategy):
        np.savez(os.path.join(args.out, "weights.npz"), *model.get_weights(),
                 loss=np.array(history["loss"]))


if __name__ == "__main__":
    main()
