"""The engine's options together: mode x logging x checkpoints x callbacks x metrics, and
`steps_per_execution` against one step per call and against `fit(steps_per_execution=k)`."""

import itertools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import train
from spec_impl._validation import MODES
from spec_impl.callbacks import CallRecorder as Recorder
from spec_impl.testing import assert_allclose, digits_mlp, read_scalars

N_TRAIN, BATCH, EPOCHS = 100, 32, 2  # 4 steps per epoch, the last one partial (4 samples)
STEPS = -(-N_TRAIN // BATCH)
ATOL = 1e-5  # float32 reductions in another order (XLA fuses differently)


def run(data, tmp_path, *, mode="function", log=False, ckpt=False, callbacks=False,
        metrics=False, k=1):
    model = digits_mlp()
    recorder = Recorder()
    history = train(model, *data[0], shuffle=False, loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.SGD(0.1), epochs=EPOCHS, batch_size=BATCH,
                    validation_data=data[1], metrics=["accuracy"] if metrics else None, mode=mode,
                    log_dir=str(tmp_path / "logs") if log else None,
                    checkpoint_dir=str(tmp_path / "ckpt") if ckpt else None,
                    callbacks=[recorder] if callbacks else (), verbose=0, steps_per_execution=k).history
    return model, history, recorder


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """`function` mode, one step per call, no extras."""
    model, history, _ = run(digits, tmp_path_factory.mktemp("ref"))
    return model.get_weights(), history


def steps_of(folder, tag):
    return [step for step, _ in read_scalars(folder).get(tag, [])]


AXES = list(itertools.product(MODES, [False, True], [False, True], [False, True], [False, True]))


@pytest.mark.parametrize(
    "mode,log,ckpt,callbacks,metrics", AXES,
    ids=["-".join([m, *(name for name, on in zip(("log", "ckpt", "cb", "metrics"), flags, strict=True)
                        if on)])
         for m, *flags in AXES])
def test_every_combination_trains_writes_and_agrees(mode, log, ckpt, callbacks, metrics, digits,
                                                    reference, tmp_path):
    model, history, recorder = run(digits, tmp_path, mode=mode, log=log, ckpt=ckpt,
                                   callbacks=callbacks, metrics=metrics)
    ref_weights, ref_history = reference
    for got, want in zip(model.get_weights(), ref_weights, strict=True):
        assert_allclose(got, want, atol=ATOL)
    assert_allclose(history["loss"], ref_history["loss"], atol=ATOL)
    assert_allclose(history["val_loss"], ref_history["val_loss"], atol=ATOL)
    expected_keys = {"loss", "val_loss"} | ({"accuracy", "val_accuracy"} if metrics else set())
    assert set(history) == expected_keys and all(len(v) == EPOCHS for v in history.values())
    if log:
        train_dir, val_dir = tmp_path / "logs" / "train", tmp_path / "logs" / "validation"
        assert steps_of(train_dir, "batch_loss") == list(range(1, EPOCHS * STEPS + 1))
        assert steps_of(train_dir, "epoch_loss") == steps_of(val_dir, "epoch_loss") == [0, 1]
        assert bool(steps_of(train_dir, "batch_accuracy")) == metrics
    else:
        assert not (tmp_path / "logs").exists()
    if ckpt:
        assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith(f"ckpt-{EPOCHS}")
    else:
        assert not (tmp_path / "ckpt").exists()
    if callbacks:
        ends = [c[1] for c in recorder.calls if c[0] == "end"]
        assert ends == list(range(STEPS)) * EPOCHS
        assert [c[1] for c in recorder.calls if c[0] == "epoch"] == [0, 1]
    else:
        assert recorder.calls == []


# ---- several steps per call ----

def _groups(k, steps=STEPS):
    """(first, last) step of each call: k steps, the last call of an epoch the rest."""
    return [(s, min(s + k, steps) - 1) for s in range(0, steps, k)]


@pytest.mark.parametrize("k", [2, 3, 4, 8], ids=lambda k: f"k{k}")
@pytest.mark.parametrize("mode", MODES)
def test_steps_per_execution_matches_one_step_per_call(mode, k, digits, reference, tmp_path):
    model, history, recorder = run(digits, tmp_path, mode=mode, log=True, ckpt=True,
                                   callbacks=True, metrics=True, k=k)
    ref_weights, ref_history = reference
    for got, want in zip(model.get_weights(), ref_weights, strict=True):
        assert_allclose(got, want, atol=ATOL)
    assert_allclose(history["loss"], ref_history["loss"], atol=ATOL)
    assert_allclose(history["val_loss"], ref_history["val_loss"], atol=ATOL)
    # TensorBoard: one batch scalar per step, whatever k; validation as well.
    assert steps_of(tmp_path / "logs" / "train", "batch_loss") == list(range(1, EPOCHS * STEPS + 1))
    val_steps = 64 // BATCH
    assert steps_of(tmp_path / "logs" / "validation", "batch_loss") == list(
        range(1, EPOCHS * val_steps + 1))
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith(f"ckpt-{EPOCHS}")
    # Callbacks: one begin / end pair per call, as under fit(steps_per_execution=k).
    calls = [c[:2] for c in recorder.calls if c[0] != "epoch"]
    expected = [(hook, step) for first, last in _groups(k) for hook, step in
                (("begin", first), ("end", last))]
    assert calls == expected * EPOCHS
    # The logs at the last call of an epoch are that epoch's loss.
    last_ends = [c[2] for c in recorder.calls if c[0] == "end" and c[1] == STEPS - 1]
    assert_allclose(last_ends, history["loss"], rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2], ids=lambda k: f"k{k}")
def test_callback_calls_match_fit_with_the_same_steps_per_execution(k, digits):
    # 4 steps per epoch: k = 1 and 2 divide it, where fit's and train's step indices coincide.
    x, y = digits[0]
    fit_recorder, train_recorder = Recorder(), Recorder()
    model = digits_mlp()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  steps_per_execution=k)
    fit = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                    callbacks=[fit_recorder]).history
    mine = digits_mlp()
    history = train(mine, x, y, shuffle=False, loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.SGD(0.1), epochs=EPOCHS, batch_size=BATCH,
                    callbacks=[train_recorder], verbose=0, steps_per_execution=k).history
    assert [c[:2] for c in train_recorder.calls] == [c[:2] for c in fit_recorder.calls]
    assert_allclose([c[2] for c in train_recorder.calls if c[0] == "end"],
                    [c[2] for c in fit_recorder.calls if c[0] == "end"], atol=ATOL)
    assert_allclose(history["loss"], fit["loss"], atol=ATOL)
    for got, want in zip(mine.get_weights(), model.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)


def test_steps_per_execution_checkpoints_at_the_call_that_reaches_checkpoint_every(digits,
                                                                                  tmp_path):
    # k = 3, checkpoint_every = 2: calls end after steps 3 and 4 (epoch 1); the call ending at
    # step 3 crosses 2, the one at 4 crosses 4; then the epoch-end checkpoint.
    train(digits_mlp(), *digits[0], shuffle=False, loss="sparse_categorical_crossentropy",
          optimizer="sgd", epochs=1,
          batch_size=BATCH, checkpoint_dir=str(tmp_path), checkpoint_every=2,
          steps_per_execution=3, verbose=0)
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path)))
    index = tf.train.get_checkpoint_state(str(tmp_path))
    assert [os.path.basename(p) for p in index.all_model_checkpoint_paths] == [
        "ckpt-1", "ckpt-2", "ckpt-3"]
    assert reader.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 1
    first = tf.train.load_checkpoint(str(tmp_path / "ckpt-1"))
    assert (first.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"),
            first.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == (0, 3)


def test_non_finite_loss_names_the_step_inside_a_group(digits):
    x, y = digits[0]
    x = x.copy()
    x[70] = np.nan  # the third batch: the first call (k = 2) passes, the second fails
    with pytest.raises(FloatingPointError, match=r"Non-finite loss nan at epoch 1, step 3: "):
        train(digits_mlp(), x, y, shuffle=False, loss="sparse_categorical_crossentropy", optimizer="sgd",
              batch_size=BATCH, steps_per_execution=2, verbose=0)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "4"])
def test_bad_steps_per_execution(bad, digits):
    with pytest.raises(ValueError, match=r"positive integer for `steps_per_execution`. "
                                         rf"Received: steps_per_execution={bad!r}"):
        train(digits_mlp(), *digits[0], shuffle=False, loss="sparse_categorical_crossentropy",
              optimizer="sgd",
              steps_per_execution=bad, verbose=0)


def test_unknown_length_dataset_with_several_steps_per_call(digits, reference):
    # A filtered dataset has no known length: the host reads each call's step count instead.
    x, y = digits[0]
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).filter(lambda a, b: True)
    assert int(data.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    model = digits_mlp()
    history = train(model, data, loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.SGD(0.1), epochs=EPOCHS, steps_per_execution=3,
                    verbose=0).history
    assert_allclose(history["loss"], reference[1]["loss"], atol=ATOL)
    for got, want in zip(model.get_weights(), reference[0], strict=True):
        assert_allclose(got, want, atol=ATOL)


def test_xla_compiles_the_numeric_step_and_not_the_summaries(digits, tmp_path):
    from spec_impl.trainer.engine import Trainer

    trainer = Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", optimizer="sgd", mode="xla",
                      log_dir=str(tmp_path))
    x, y = digits[0]
    trainer.fit(x, y, batch_size=BATCH, verbose=0)
    # The numeric step has an XLA program; the function that writes summaries has none.
    hlo = trainer.compiled_train_step.traced.experimental_get_compiler_ir((x[:BATCH], y[:BATCH]))(stage="hlo")
    assert hlo.startswith("HloModule")
    iterator = iter(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH))
    with pytest.raises(ValueError, match="jit_compile"):
        trainer.train_function.experimental_get_compiler_ir(iterator)()


def test_logs_reach_the_host_once_per_epoch_not_per_step(digits, tmp_path, monkeypatch):
    # With verbose=0 and no callbacks nothing needs the values during an epoch: the running
    # logs are read (a host synchronisation) once per epoch for training and once for validation.
    from spec_impl.trainer.engine import Trainer

    reads = []
    original = Trainer.logs
    monkeypatch.setattr(Trainer, "logs", lambda self, last=None, prefix="":
                        reads.append(prefix) or original(self, last, prefix))
    run(digits, tmp_path)
    assert reads == ["", "val_"] * EPOCHS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_with_logging_checkpoints_steps_per_call_and_resume(policy, mode, digits,
                                                                            tmp_path):
    # Two epochs straight, against one epoch, a fresh process-like restart (new model, new
    # optimizer) and a resume to two: the same weights, and the loss scale's state survives.
    from spec_impl.precision import global_policy

    def model():
        with global_policy(policy):
            return digits_mlp()

    def fit_for(epochs, folder, net):
        return train(net, *digits[0], shuffle=False, loss="sparse_categorical_crossentropy",
                     optimizer=keras.optimizers.SGD(0.1), epochs=epochs, batch_size=BATCH,
                     mode=mode, log_dir=str(tmp_path / folder / "logs"),
                     checkpoint_dir=str(tmp_path / folder / "ckpt"), steps_per_execution=3,
                     verbose=0).history

    straight = model()
    history = fit_for(EPOCHS, "a", straight)
    fit_for(1, "b", model())
    resumed_model = model()
    resumed = fit_for(EPOCHS, "b", resumed_model)
    for got, want in zip(resumed_model.get_weights(), straight.get_weights(), strict=True):
        assert_allclose(got, want, atol=0, rtol=0)
    assert_allclose(resumed["loss"], history["loss"][1:], atol=0, rtol=0)
    optimizer = resumed_model.optimizer
    if policy == "mixed_float16":  # its step counter counts every step of both epochs
        assert int(optimizer.step_counter.numpy()) == EPOCHS * STEPS
    else:
        assert not isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert steps_of(tmp_path / "a" / "logs" / "train", "batch_loss") == list(
        range(1, EPOCHS * STEPS + 1))
