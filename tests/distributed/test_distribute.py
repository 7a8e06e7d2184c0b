"""Distributed training: the package's loop and `fit` under `tf.distribute`.

The core is equivalence: from the same weights, data, order and global batch, SGD ends with the
same weights and per-epoch logs on one device, on 2 and on 4 mirrored (logical CPU) devices, and
under `fit` with the same strategy. A loop that averages the loss per replica fails it. Then
every option of `train` under a strategy, the rules of `spec_impl.trainer.distribute`, and what
TensorFlow itself refuses.
"""

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import (
    ReconstructionRegressor,
    ResidualRegressor,
    get_mnist_model,
    global_policy,
    make_strategy,
    train,
)
from spec_impl.testing import assert_allclose, read_scalars
from spec_impl.trainer.batchnorm import batch_norm_layers, recalibrate_batch_norm
from spec_impl.trainer.distribute import XLA_REFUSED, check_created_in_scope, cpu_devices, per_example_loss
from spec_impl.trainer.engine import Trainer
from spec_impl.trainer.keras_api import unscale_loss_for_distribution
from spec_impl.trainer.step import Steps

# Float32 sums taken in another order (per replica, then across) agree to about 1e-7 here; 1e-5
# leaves room for a few epochs of SGD amplifying that, and is far below what a wrong loss
# scaling gives (the negative case differs by more than 1e-2).
RTOL, ATOL = 1e-5, 1e-6
# 39 samples in global batches of 16: the last holds 7, split 4 + 3 on 2 replicas and
# 2 + 2 + 2 + 1 on 4, which only an all-reduced global batch size weighs right.
N_UNEVEN, N_EVEN, BATCH, EPOCHS = 39, 40, 16, 2
REPLICAS = (2, 4)
L2 = 0.01


def digits(n):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x[:n] / 16.0).astype("float32"), y[:n].astype("int64")


def regression(n, features=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x @ rng.normal(size=(features, 1)) + 0.1).astype("float32")
    return x, y


def l2_model():
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", kernel_regularizer=keras.regularizers.l2(L2)),
        keras.layers.Dense(1),
    ])


def built(model, features):
    model.build((None, features))
    return model


# name -> (build, data, loss, metrics, learning rate). No batch norm, no dropout: deterministic.
CASES = {
    "mnist_mlp": (lambda: get_mnist_model(64, 10, dropout=0), digits,
                  "sparse_categorical_crossentropy", ["accuracy"], 0.1),
    "residual_regressor": (lambda: built(ResidualRegressor(), 8), regression, "mse", ["mae"], 1e-5),
    "l2_regularized": (l2_model, regression, "mse", ["mae"], 0.01),
    "reconstruction_regressor": (lambda: built(ReconstructionRegressor(), 8), regression, "mse",
                                 ["mae"], 0.01),
}


def scope(strategy):
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def make(case, strategy):
    build = CASES[case][0]
    with scope(strategy):
        keras.utils.set_random_seed(3)
        return build()


def run_loop(case, strategy, n=N_UNEVEN, **kwargs):
    _, data, loss, metrics, lr = CASES[case]
    model = make(case, strategy)
    with scope(strategy):  # a Keras optimizer belongs to the strategy current at its creation
        optimizer = keras.optimizers.SGD(lr)
    history = train(model, *data(n), shuffle=False, loss=loss, optimizer=optimizer, metrics=metrics,
                    epochs=EPOCHS, batch_size=BATCH, verbose=0, strategy=strategy, **kwargs).history
    return model, history


def run_fit(case, strategy, n=N_EVEN):
    _, data, loss, metrics, lr = CASES[case]
    model = make(case, strategy)
    with scope(strategy):
        model.compile(keras.optimizers.SGD(lr), loss, metrics=metrics)
    history = model.fit(*data(n), batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    return model, history.history


@functools.cache
def _reference(case, n, kind):
    model, history = (run_loop if kind == "loop" else run_fit)(case, None, n=n)
    return model.get_weights(), dict(history)


def one_device(case, n=N_UNEVEN, kind="loop"):
    """The one-device run's weights and history (computed once per session)."""
    return _reference(case, n, kind)


# A metric the model updates in `call` with its batch's mean (ReconstructionRegressor's
# `reconstruction_loss`) averages per-call means: per replica under a strategy, so on an uneven
# split it is another average than on one device by definition (fit logs the same). Its key is
# compared; its values only where every replica holds as many samples.
PER_CALL_MEANS = ("reconstruction_loss",)


def assert_same_run(run, reference, err_msg="", even=False):
    (model, history), (ref_weights, ref_history) = run, reference
    for got, want in zip(model.get_weights(), ref_weights, strict=True):
        assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=err_msg)
    assert sorted(history) == sorted(ref_history), err_msg
    for name, values in ref_history.items():
        if even or name not in PER_CALL_MEANS:
            assert_allclose(history[name], values, rtol=RTOL, atol=ATOL, err_msg=f"{err_msg} {name}")


@pytest.fixture(scope="module")
def strategies():
    return {n: make_strategy("mirrored", n) for n in REPLICAS}


# ---- make_strategy ----

def test_make_strategy_kinds(strategies):
    assert make_strategy().num_replicas_in_sync == 1
    assert make_strategy("default") is tf.distribute.get_strategy()
    for n, strategy in strategies.items():
        assert isinstance(strategy, tf.distribute.MirroredStrategy)
        assert strategy.num_replicas_in_sync == n
        assert [d.split("/")[-1] for d in strategy.extended.worker_devices] == \
            [f"device:CPU:{i}" for i in range(n)]


def test_make_strategy_refuses_more_cpu_devices_than_initialised():
    with pytest.raises(RuntimeError, match="8 logical CPU devices were asked for, but TensorFlow "
                                           "has already initialised its devices with 4"):
        make_strategy("mirrored", 8)
    assert len(cpu_devices(2)) == 2  # fewer than configured: the first ones


@pytest.mark.parametrize("kwargs, message", [
    ({"kind": "tpu"}, "Expected `kind` to be one of 'default', 'mirrored', 'multiworker'"),
    ({"kind": "mirrored", "devices": 0}, "Expected a positive integer for `devices`"),
    ({"kind": "default", "devices": 2}, "`devices` applies to kind='mirrored' only"),
])
def test_make_strategy_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_strategy(**kwargs)


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="reads the cluster from the TF_CONFIG environment variable"):
        make_strategy("multiworker")


# ---- equivalence: the core of the specification ----

@pytest.mark.parametrize("case", CASES)
def test_loop_equals_one_device_on_2_and_4_replicas(case, strategies):
    reference = one_device(case)
    assert len(reference[1]["loss"]) == EPOCHS
    for n, strategy in strategies.items():
        assert_same_run(run_loop(case, strategy), reference, err_msg=f"{n} replicas")


@pytest.mark.parametrize("case", CASES)
def test_fit_under_the_strategy_equals_one_device(case, strategies):
    reference = one_device(case, N_EVEN, "fit")
    for n, strategy in strategies.items():
        assert_same_run(run_fit(case, strategy), reference, err_msg=f"fit, {n} replicas", even=True)
    # and the package's loop under the strategy agrees with fit
    assert_same_run(run_loop(case, strategies[2], n=N_EVEN), reference, err_msg="loop vs fit", even=True)


EXACT_LOSS = Steps._replica_loss


def _per_replica_mean(self, y, predictions, sample_weight, extra_losses):
    """The classic mistake: each replica's loss is its own mean, so the gradients summed over
    replicas are `replicas` times too large."""
    mean = unscale_loss_for_distribution(self.model._compile_loss(y, predictions, sample_weight))
    mean = mean + tf.add_n(extra_losses or [tf.constant(0.0)])
    return mean, mean


def _extra_losses_over_replicas(self, y, predictions, sample_weight, extra_losses):
    """`tf.nn.scale_regularization_loss` on every `model.losses` term: right for a weight
    penalty, but an `add_loss` mean over 4 and over 3 examples is then weighed 1/2 each."""
    loss, mean = EXACT_LOSS(self, y, predictions, sample_weight, [])
    extra = tf.add_n(extra_losses)
    return loss + tf.nn.scale_regularization_loss(extra), mean + extra


@pytest.mark.parametrize("case, wrong", [("mnist_mlp", _per_replica_mean),
                                         ("reconstruction_regressor", _extra_losses_over_replicas)])
def test_a_wrong_loss_scaling_fails_the_equivalence(case, wrong, strategies, monkeypatch):
    reference = one_device(case)
    monkeypatch.setattr(Steps, "_replica_loss", wrong)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        assert_same_run(run_loop(case, strategies[2]), reference)


def test_fit_and_the_default_average_weigh_an_uneven_partial_batch_wrong(strategies):
    """`fit` (and `compute_average_loss` without `global_batch_size`) divide each replica's sum
    by its local size x replicas: a last batch of 7 split 4 + 3 is weighed 1/8 and 1/6 per
    example instead of 1/7. The package's loop all-reduces the global size and agrees with one
    device; `fit` under the strategy does not (on an even split it does, test above)."""
    reference = one_device("mnist_mlp", N_UNEVEN, "fit")
    fitted = run_fit("mnist_mlp", strategies[2], n=N_UNEVEN)
    gap = max(np.abs(a - b).max() for a, b in zip(fitted[0].get_weights(), reference[0], strict=True))
    assert gap > 1e-3
    assert_same_run(run_loop("mnist_mlp", strategies[2], n=N_UNEVEN), one_device("mnist_mlp"))


def test_keras_loss_in_a_replica_already_divides_by_the_replicas(strategies):
    """Keras 3: a `Loss` with its default reduction, called inside `strategy.run`, returns the
    local mean divided by the number of replicas. Dividing it again (or passing it to
    `compute_average_loss`) scales it twice; the loop asks for per-example values instead."""
    strategy = strategies[2]
    loss = keras.losses.MeanSquaredError()
    y = tf.constant([[1.0], [3.0]])

    def replica(_):
        return loss(y, tf.zeros_like(y)), tf.reduce_sum(per_example_loss(loss)(y, tf.zeros_like(y)))

    scaled, summed = (strategy.experimental_local_results(t)[0]
                      for t in strategy.run(replica, args=(tf.constant(0),)))
    assert float(scaled) == pytest.approx(5.0 / 2)  # mean 5, halved
    assert float(summed) == pytest.approx(10.0)


# ---- every option of train, under a strategy ----

@pytest.mark.parametrize("mode, k", [("eager", 1), ("function", 3), ("eager", 3)])
def test_modes_and_steps_per_execution_under_a_strategy(mode, k, strategies):
    reference = one_device("mnist_mlp")
    assert_same_run(run_loop("mnist_mlp", strategies[2], mode=mode, steps_per_execution=k),
                    reference, err_msg=f"{mode}, k={k}")


def test_auto_under_a_strategy_chooses_the_steps_per_call_in_function_mode(strategies):
    """Under MirroredStrategy `auto` times function mode alone (XLA per replica is refused on
    several CPU devices); the run equals one device's, whatever k it keeps."""
    trainer = Trainer(make("mnist_mlp", strategies[2]), loss="sparse_categorical_crossentropy",
                      optimizer="sgd", strategy=strategies[2], mode="auto",
                      steps_per_execution="auto")
    assert trainer.candidates == (("function",), (1, 8, 32))
    _, data, loss, metrics, lr = CASES["mnist_mlp"]
    model = make("mnist_mlp", strategies[2])
    with scope(strategies[2]):
        optimizer = keras.optimizers.SGD(lr)
    history = train(model, *data(N_UNEVEN), shuffle=False, loss=loss, optimizer=optimizer,
                    metrics=metrics, epochs=EPOCHS, batch_size=BATCH, verbose=0,
                    strategy=strategies[2], mode="auto", steps_per_execution="auto")
    execution = history.params["execution"]
    # 3 steps an epoch: only k = 1 fits an epoch
    assert (execution["mode"], execution["steps_per_execution"]) == ("function", 1)
    assert list(execution["ms_per_step"]) == ["function_k1"]
    assert_same_run((model, history.history), one_device("mnist_mlp"), err_msg="auto")


def test_the_step_is_traced_once_with_a_partial_batch(strategies):
    model = make("mnist_mlp", strategies[4])
    trainer = Trainer(model, loss="sparse_categorical_crossentropy", optimizer="sgd",
                      strategy=strategies[4])
    trainer.fit(*digits(N_UNEVEN), batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                validation_data=digits(N_UNEVEN))
    assert trainer.train_function.experimental_get_tracing_count() == 1
    assert trainer.test_function.experimental_get_tracing_count() == 1


def test_xla_on_several_cpu_devices_is_refused_as_tensorflow_refuses_it(strategies):
    with pytest.raises(ValueError, match=f"mode='xla' with MirroredStrategy on 2 CPU devices: "
                                         f"{XLA_REFUSED}"):
        run_loop("mnist_mlp", strategies[2], mode="xla")
    model = make("mnist_mlp", strategies[2])
    with strategies[2].scope():
        model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="Trying to access resource .* located "
                                                             "in device .*CPU:1 from device .*CPU:0"):
        model.fit(*digits(BATCH), batch_size=BATCH, verbose=0)


def test_model_built_outside_the_scope_is_refused(strategies):
    model = make("mnist_mlp", None)
    with pytest.raises(ValueError, match="The variable 'dense/kernel' of model 'mnist_mlp' was "
                                         "created outside the strategy's scope"):
        train(model, *digits(BATCH), shuffle=False, loss="sparse_categorical_crossentropy", optimizer="sgd",
              verbose=0, strategy=strategies[2])
    check_created_in_scope(make("mnist_mlp", strategies[2]), strategies[2])  # no error


def test_an_unbuilt_subclassed_model_is_built_in_the_scope(strategies):
    with strategies[2].scope():
        keras.utils.set_random_seed(3)
        model = ResidualRegressor()
    assert not model.variables
    train(model, *regression(BATCH), shuffle=False, loss="mse", optimizer="sgd", verbose=0,
          strategy=strategies[2])
    check_created_in_scope(model, strategies[2])


def test_validation_logs_callbacks_and_the_nan_stop(strategies, tmp_path):
    class Record(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_logs = []

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_logs.append(dict(logs))

    record = Record()
    reference = run_loop("mnist_mlp", None, validation_data=digits(N_EVEN))
    reference = reference[0].get_weights(), reference[1]
    model, history = run_loop("mnist_mlp", strategies[2], validation_data=digits(N_EVEN),
                              log_dir=str(tmp_path), callbacks=[record])
    assert_same_run((model, history), reference)
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert [logs["val_loss"] for logs in record.epoch_logs] == history["val_loss"]
    train_scalars = read_scalars(tmp_path / "train")
    assert [step for step, _ in train_scalars["batch_loss"]] == list(range(1, 2 * 3 + 1))
    assert [v for _, v in train_scalars["epoch_loss"]] == pytest.approx(history["loss"])
    assert [v for _, v in read_scalars(tmp_path / "validation")["epoch_loss"]] == \
        pytest.approx(history["val_loss"])

    x, y = regression(N_UNEVEN)
    y[20] = np.nan  # in the second batch, on the first replica
    with pytest.raises(FloatingPointError, match="Non-finite loss nan at epoch 1, step 2"):
        train(make("l2_regularized", strategies[2]), x, y, shuffle=False, loss="mse", optimizer="sgd",
              batch_size=BATCH, verbose=0, strategy=strategies[2])


class Crash(Exception):
    pass


def test_checkpoint_and_resume_under_a_strategy(strategies, tmp_path):
    reference = one_device("mnist_mlp")
    strategy = strategies[4]

    class CrashMidEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:  # the second step of the first epoch, before its checkpoint
                raise Crash

    with pytest.raises(Crash):
        run_loop("mnist_mlp", strategy, checkpoint_dir=str(tmp_path), checkpoint_every=1,
                 callbacks=[CrashMidEpoch()])
    reader = tf.train.load_checkpoint(str(tmp_path))
    assert (reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"),
            reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == (0, 1)
    resumed = run_loop("mnist_mlp", strategy, checkpoint_dir=str(tmp_path))
    for got, want in zip(resumed[0].get_weights(), reference[0], strict=True):
        assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_recalibrate_bn_under_a_strategy(strategies):
    strategy = strategies[2]
    with strategy.scope():
        keras.utils.set_random_seed(3)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(16),
                                  keras.layers.BatchNormalization(),
                                  keras.layers.Dense(10, activation="softmax")])
    data = digits(N_EVEN)
    train(model, *data, shuffle=False, loss="sparse_categorical_crossentropy", optimizer="sgd", epochs=1,
          batch_size=BATCH, verbose=0, strategy=strategy, recalibrate_bn=True)
    (bn,) = batch_norm_layers(model)
    trained = bn.moving_mean.numpy().copy()
    recalibrate_batch_norm(model, tf.data.Dataset.from_tensor_slices(data).batch(BATCH))
    assert_allclose(bn.moving_mean, trained, rtol=1e-5)  # the end-of-epoch recalibration's value
    assert np.abs(trained).max() > 0.1  # not the 0.99-momentum average of 3 steps from 0


def test_mixed_precision_under_a_strategy(strategies):
    runs = []
    for strategy in (None, strategies[2]):
        with global_policy("mixed_float16"), scope(strategy):
            keras.utils.set_random_seed(3)
            model = get_mnist_model(64, 10, dropout=0)
            optimizer = keras.optimizers.SGD(0.1)
        runs.append(train(model, *digits(N_UNEVEN), shuffle=False, loss="sparse_categorical_crossentropy",
                          optimizer=optimizer, epochs=EPOCHS, batch_size=BATCH,
                          verbose=0, strategy=strategy))
    assert isinstance(runs[1].model.optimizer, keras.optimizers.LossScaleOptimizer)
    # float16 sums in another order: agreement to float16's resolution, not float32's
    assert_allclose(runs[1].history["loss"], runs[0].history["loss"], rtol=1e-3)


# ---- several worker processes on 127.0.0.1 ----

WORKER = Path(__file__).with_name("distributed_worker.py")
CLUSTER_TIMEOUT = 300  # seconds; a run takes about 15 on 2 cores


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def cluster(out, scratch, *args, argv=None):
    """Two `distributed_worker.py` processes (or `python ARGV`), each with its `TF_CONFIG`;
    output in OUT/w<i>.log. Any still running on exit are killed."""
    ports = free_ports(2)
    spec = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    with contextlib.ExitStack() as stack:
        processes = []
        for index in range(2):
            env = dict(os.environ, TMPDIR=str(scratch), TF_CPP_MIN_LOG_LEVEL="3",
                       TF_CONFIG=json.dumps({"cluster": spec,
                                             "task": {"type": "worker", "index": index}}))
            log = stack.enter_context(open(out / f"w{index}.log", "w"))
            command = argv or [str(WORKER), str(out), *args]
            processes.append(subprocess.Popen([sys.executable, *command],
                                              env=env, stdout=log, stderr=subprocess.STDOUT))
        try:
            yield processes
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                process.wait()


def wait_all(processes, out):
    codes = [process.wait(timeout=CLUSTER_TIMEOUT) for process in processes]
    logs = "\n".join((out / f"w{i}.log").read_text()[-3000:] for i in range(2))
    assert codes == [0, 0], logs


@pytest.fixture(scope="module")
def worker_reference():
    """The workers' model trained on one device in this process: weights and loss history."""
    import distributed_worker as worker

    model = worker.build()
    history = train(model, *worker.data(), shuffle=False, **worker.fit_settings()).history
    return model.get_weights(), history["loss"]


def assert_chief_result(out, reference):
    saved = np.load(out / "weights.npz")
    weights, losses = reference
    for i, want in enumerate(weights):
        assert_allclose(saved[f"arr_{i}"], want, rtol=RTOL, atol=ATOL)
    assert_allclose(saved["loss"], losses, rtol=RTOL)
    reloaded = keras.saving.load_model(out / "model.keras")
    for got, want in zip(reloaded.get_weights(), weights, strict=True):
        assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.slow
def test_two_worker_processes_equal_one_device_and_only_the_chief_writes(tmp_path,
                                                                         worker_reference):
    out, scratch = tmp_path / "run", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    with cluster(out, scratch) as processes:
        wait_all(processes, out)
    assert_chief_result(out, worker_reference)
    assert len(list((out / "logs" / "train").iterdir())) == 1  # the chief's event file alone
    assert read_scalars(out / "logs" / "train")["epoch_loss"][-1][1] == \
        pytest.approx(worker_reference[1][-1], rel=RTOL)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "logs", "model.keras",
                                                     "w0.log", "w1.log", "weights.npz"]
    # worker 1's checkpoints, events and model: removed (Python may leave its own caches there)
    assert list(scratch.glob("spec_impl-worker-*")) == []


# How the chief learns that worker 1 died, by TensorFlow version (measured on each): 2.21 names
# the heartbeats; 2.16 reports the collective it was in as cancelled.
KILLED_WORKER_MESSAGES = {(2, 16): "CollectiveReduceV2",
                          (2, 21): "tasks are unhealthy (stopped sending heartbeats)"}
KILLED_WORKER_MESSAGE = KILLED_WORKER_MESSAGES.get(
    tuple(int(p) for p in tf.__version__.split(".")[:2]), "")  # another version: no pin


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_and_a_restart_from_the_checkpoint(tmp_path, worker_reference):
    import distributed_worker as worker

    out, scratch = tmp_path / "run", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    marker = out / "paused-worker-1"
    with cluster(out, scratch, "--pause-at", str(worker.CHECKPOINT_EVERY)) as (chief, other):
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while not (marker.exists() and (out / "checkpoints" / "checkpoint").exists()):
            assert time.monotonic() < deadline and chief.poll() is None and other.poll() is None
            time.sleep(0.2)
        other.send_signal(signal.SIGKILL)
        # The chief's collective fails once worker 1 stops sending heartbeats.
        assert chief.wait(timeout=CLUSTER_TIMEOUT) != 0
    chief_log = (out / "w0.log").read_text()
    assert KILLED_WORKER_MESSAGE in chief_log, chief_log[-3000:]
    reader = tf.train.load_checkpoint(str(out / "checkpoints"))
    assert (reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"),
            reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == (0, worker.CHECKPOINT_EVERY)
    assert not (out / "model.keras").exists()

    restart_scratch = tmp_path / "tmp-restart"  # the killed worker could not clean its own
    restart_scratch.mkdir()
    with cluster(out, restart_scratch) as processes:  # both restarted: epoch 1, step 3 on
        wait_all(processes, out)
    assert_chief_result(out, worker_reference)
    assert list(restart_scratch.glob("spec_impl-worker-*")) == []


@pytest.mark.slow
def test_a_sigterm_to_one_worker_stops_both_at_the_same_step_and_they_resume(tmp_path,
                                                                            worker_reference):
    from spec_impl.trainer.preemption import PREEMPTED_EXIT_CODE

    out, scratch = tmp_path / "run", tmp_path / "tmp"
    out.mkdir()
    scratch.mkdir()
    marker = out / "paused-worker-1"
    mark_at = 3  # epoch 0: the call of step 3 (from 0); the workers stop after it, at step 4
    with cluster(out, scratch, "--mark-at", str(mark_at)) as (chief, other):
        deadline = time.monotonic() + CLUSTER_TIMEOUT
        while not marker.exists():
            assert time.monotonic() < deadline and chief.poll() is None and other.poll() is None
            time.sleep(0.05)
        other.send_signal(signal.SIGTERM)
        codes = [chief.wait(timeout=CLUSTER_TIMEOUT), other.wait(timeout=CLUSTER_TIMEOUT)]
    logs = [(out / f"w{i}.log").read_text() for i in range(2)]
    assert codes == [PREEMPTED_EXIT_CODE] * 2, "\n".join(log[-3000:] for log in logs)
    for log in logs:  # both name the same step
        assert f"Stopped by SIGTERM after epoch 1, step {mark_at + 1}: checkpoint " in log
    reader = tf.train.load_checkpoint(str(out / "checkpoints"))
    assert (reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"),
            reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == (0, mark_at + 1)
    assert list(scratch.glob("spec_impl-worker-*")) == []  # worker 1 cleaned up on its way out
    with cluster(out, scratch) as processes:  # the cluster resumes together
        wait_all(processes, out)
    assert_chief_result(out, worker_reference)


CLI_RUNS = 5


@pytest.mark.slow
def test_the_command_line_with_its_progress_bar_on_two_workers(tmp_path):
    # The progress bar and the callbacks read the logs a call returns (local tensors) and the
    # epoch's logs at the same point on every worker, so both issue the same collectives: five
    # runs in a row with the bar on, several epochs with validation, all succeed.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    for run in range(CLI_RUNS):
        out = tmp_path / f"run{run}"
        out.mkdir()
        argv = ["-m", "spec_impl", "train", "--strategy", "multiworker", "--model", "mnist_mlp",
                "--limit", "192", "--epochs", "3", "--batch-size", "16", "--out", str(out / "out")]
        with cluster(out, scratch, argv=argv) as processes:
            wait_all(processes, out)
        chief_log = (out / "w0.log").read_text()
        assert chief_log.count("Epoch 3/3") == 1 and "val_loss" in chief_log, chief_log[-2000:]
        assert (out / "out" / "model.keras").exists()


@pytest.mark.parametrize("replicas", REPLICAS)
def test_on_nan_skip_under_a_strategy_skips_on_every_replica(replicas, strategies):
    # A NaN in one sample of the second batch: only the replica holding it sees a NaN, yet all
    # must leave the step out (they all-reduce the decision). The reference is one device
    # trained on the data without that batch.
    x, y = digits(N_EVEN)
    bad = x.copy()
    bad[BATCH + 4, 0] = np.nan
    strategy = strategies[replicas]
    model = make("mnist_mlp", strategy)
    with scope(strategy):
        optimizer = keras.optimizers.SGD(CASES["mnist_mlp"][4])
    with pytest.warns(RuntimeWarning, match="Skipped 1 step"):
        history = train(model, bad, y, shuffle=False, loss=CASES["mnist_mlp"][2], optimizer=optimizer,
                        epochs=EPOCHS, batch_size=BATCH, verbose=0, strategy=strategy,
                        on_nan="skip").history
    keep = np.r_[0:BATCH, 2 * BATCH:N_EVEN]
    reference = make("mnist_mlp", None)
    ref_history = train(reference, x[keep], y[keep], shuffle=False, loss=CASES["mnist_mlp"][2],
                        optimizer=keras.optimizers.SGD(CASES["mnist_mlp"][4]), epochs=EPOCHS,
                        batch_size=BATCH, verbose=0).history
    assert_same_run((model, history), (reference.get_weights(), ref_history))


def test_optimizer_created_outside_the_scope_is_refused(strategies):
    with pytest.raises(ValueError, match="The optimizer SGD was created outside the strategy's "
                                         "scope. Create it inside `with strategy.scope\\(\\):`"):
        train(make("mnist_mlp", strategies[2]), *digits(BATCH), shuffle=False,
              loss="sparse_categorical_crossentropy", optimizer=keras.optimizers.SGD(), verbose=0,
              strategy=strategies[2])
