"""`mode="xla"` with `steps_per_execution=k > 1`: k steps in one XLA program.

Groups of k full batches are read in the graph, stacked and run by one XLA-compiled function;
the tail (fewer than k batches left, or the partial last batch) runs step by step. Against
`function` mode: the same weights, history, TensorBoard points and callback calls, with partial
groups, a partial last batch, a NaN inside a group and a resumed run.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import train
from spec_impl.callbacks import CallRecorder as Recorder
from spec_impl.testing import assert_allclose, digits_arrays, digits_mlp, read_scalars
from spec_impl.trainer.engine import XLA_UNROLL, Trainer

BATCH, EPOCHS = 32, 2
# float32 sums in the order XLA fuses them: a few ulp after 22 Adam steps.
ATOL = 1e-5


def run(n, mode, k, tmp_path=None, **kwargs):
    x, y, x_val, y_val = digits_arrays(n)
    model = digits_mlp()
    recorder = Recorder()
    history = train(model, x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
                    validation_data=(x_val, y_val), loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"], mode=mode,
                    steps_per_execution=k, callbacks=[recorder],
                    log_dir=None if tmp_path is None else str(tmp_path / mode), **kwargs)
    return model, history, recorder


# 330 samples: 11 batches, the last of 10. k = 4: groups of batches 1-4 and 5-8, then 3 steps
# one by one (the partial batch among them). k = 5: 2 groups, then the partial batch.
# 320 samples, k = 5: 10 full batches, 2 groups and nothing step by step.
# 100 samples, k = 8: 4 batches, no full group: every step one by one.
# 700 samples, k = 20: 22 batches, the last of 28; one group of 20 (XLA programs of 8, 8 and 4
# steps, XLA_UNROLL), then 2 steps one by one.
@pytest.mark.parametrize("n, k", [(330, 4), (330, 5), (320, 5), (100, 8), (700, 20)],
                         ids=["n330-k4", "n330-k5", "n320-k5", "n100-k8", "n700-k20"])
def test_xla_groups_equal_function_mode(n, k, tmp_path):
    reference, ref_history, ref_calls = run(n, "function", k, tmp_path)
    model, history, calls = run(n, "xla", k, tmp_path)
    assert sorted(history.history) == sorted(ref_history.history)
    for name, values in ref_history.history.items():
        assert_allclose(history.history[name], values, atol=ATOL, err_msg=name)
    for got, want in zip(model.get_weights(), reference.get_weights(), strict=True):
        assert_allclose(got, want, atol=ATOL)
    # callbacks once per call, at the same steps
    assert [c[:2] for c in calls.calls] == [c[:2] for c in ref_calls.calls]
    # one TensorBoard point per step, written after each group, with the same values
    ours, theirs = read_scalars(tmp_path / "xla" / "train"), read_scalars(tmp_path / "function" / "train")
    assert sorted(ours) == sorted(theirs)
    steps = -(-n // BATCH)
    assert [s for s, _ in ours["batch_loss"]] == list(range(1, EPOCHS * steps + 1))
    for tag in theirs:
        assert_allclose([v for _, v in ours[tag]], [v for _, v in theirs[tag]], atol=ATOL)


def test_the_group_is_one_xla_program_traced_once():
    x, y, *_ = digits_arrays(330)
    trainer = Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", optimizer="adam", mode="xla",
                      steps_per_execution=4)
    trainer.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0)
    assert trainer.xla_program.experimental_get_tracing_count() == 1
    stacked = (tf.zeros((4, BATCH, 64)), tf.zeros((4, BATCH), tf.int64))
    hlo = trainer.xla_program.experimental_get_compiler_ir(stacked)(stage="hlo")
    # the k steps unrolled in one program: no loop, and four times one step's matmuls
    one_step = trainer.compiled_train_step.traced.experimental_get_compiler_ir(
        (tf.zeros((BATCH, 64)), tf.zeros((BATCH,), tf.int64)))(stage="hlo")
    assert hlo.startswith("HloModule") and "while" not in hlo
    assert hlo.count(" dot(") == 4 * one_step.count(" dot(") > 0
    # 2 groups per epoch, then 3 steps through the single-step function
    assert int(trainer.optimizer.iterations) == EPOCHS * 11


def test_a_large_k_runs_programs_of_at_most_xla_unroll_steps():
    x, y, *_ = digits_arrays(640)  # 20 full batches
    trainer = Trainer(digits_mlp(), loss="sparse_categorical_crossentropy", optimizer="adam",
                      mode="xla", steps_per_execution=20)
    trainer.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert XLA_UNROLL == 8
    # one group of 20: programs of 8 steps (run twice) and 4, each traced once
    assert trainer.xla_program.experimental_get_tracing_count() == 2
    assert int(trainer.optimizer.iterations) == int(trainer.checks.train_counter) == 20
    # another k of the same trainer shares the programs: k = 16 compiles nothing new
    trainer.configure("xla", 16)
    trainer.fit(x[:512], y[:512], batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
    assert trainer.xla_program.experimental_get_tracing_count() == 2


def test_a_nan_inside_a_group_names_its_step():
    x, y, *_ = digits_arrays(330)
    x = x.copy()
    x[5 * BATCH + 3] = np.nan  # batch 6: the second step of the second group (k = 4)
    with pytest.raises(FloatingPointError, match=r"Non-finite loss nan at epoch 1, step 6: "):
        train(digits_mlp(), x, y, batch_size=BATCH, shuffle=False, verbose=0, mode="xla",
              steps_per_execution=4, loss="sparse_categorical_crossentropy", optimizer="sgd")


class CrashAt(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError(f"crash after step {batch + 1}")


def test_a_run_resumed_mid_epoch_from_a_group_checkpoint_equals_a_straight_one(tmp_path):
    # k = 4, a checkpoint every 4 steps: the run crashes after the group ending at step 8 of
    # epoch 1 (its checkpoint written); the rerun resumes there and ends where a straight run ends.
    x, y, *_ = digits_arrays(330)
    settings = dict(batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0, mode="xla",
                    steps_per_execution=4, loss="sparse_categorical_crossentropy",
                    checkpoint_every=4)
    straight = digits_mlp()
    train(straight, x, y, optimizer=keras.optimizers.Adam(1e-2),
          checkpoint_dir=str(tmp_path / "a"), **settings)
    with pytest.raises(RuntimeError, match="crash after step 8"):
        train(digits_mlp(), x, y, optimizer=keras.optimizers.Adam(1e-2), callbacks=[CrashAt(7)],
              checkpoint_dir=str(tmp_path / "b"), **settings)
    resumed = digits_mlp()
    train(resumed, x, y, optimizer=keras.optimizers.Adam(1e-2), checkpoint_dir=str(tmp_path / "b"),
          **settings)
    for got, want in zip(resumed.get_weights(), straight.get_weights(), strict=True):
        assert_allclose(got, want, atol=0, rtol=0)
