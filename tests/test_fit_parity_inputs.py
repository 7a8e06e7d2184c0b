"""`train` against `fit` on the inputs `fit` takes beyond the parity table's rows: unbuilt
`Sequential` models, data without targets, fixed batch sizes (a stateful RNN among them), models
without trainable weights, `steps_per_epoch` over data that run out, `initial_epoch` with a
checkpoint folder, empty data, the keras-io guides' `LogisticEndpoint` (targets as an input, a
loss and a metric from inside `call`) and `CustomRNN` (a Python loop over time at a static batch
size); and the old `train(model, (x, y))` call.

Each row trains the same model from the same weights on the same batches with `fit` and with
`train` (in each mode, against the same execution on `fit`'s side) and asserts the same history
and the same weights, with the warnings `fit` gives.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import train
from spec_impl.testing import assert_same_training, digits_arrays

N_TRAIN, BATCH, EPOCHS = 100, 32, 3
SPARSE = "sparse_categorical_crossentropy"
VARIANTS = [
    pytest.param(("function", 1), id="function"),
    pytest.param(("eager", 1), id="eager", marks=pytest.mark.slow),
    pytest.param(("xla", 2), id="xla-k2", marks=pytest.mark.slow),
]
ATOL = 1e-5  # float32 sums in another order (XLA fuses, eager does not), as in the parity table


def _seeded(units, activation=None):
    return keras.layers.Dense(units, activation=activation,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=0))


def unbuilt_sequential():
    """No input shape: built by the first batch, as under `fit`."""
    return keras.Sequential([_seeded(16, "relu"), _seeded(10, "softmax")])


class ReconstructionPenalty(keras.layers.Layer):
    """Adds the mean squared difference of its two inputs as a loss; returns the first."""

    def call(self, reconstruction, target):
        self.add_loss(keras.ops.mean(keras.ops.square(reconstruction - target)))
        return reconstruction


def autoencoder():
    """A model that adds its own loss: trained on `x` alone."""
    inputs = keras.Input((64,))
    reconstruction = _seeded(64)(_seeded(4, "relu")(inputs))
    return keras.Model(inputs, ReconstructionPenalty()(reconstruction, inputs))


def dict_autoencoder():
    """Dict inputs and no targets."""
    pixels, extra = keras.Input((64,), name="pixels"), keras.Input((3,), name="extra")
    joined = keras.layers.Concatenate()([pixels, extra])
    reconstruction = _seeded(67)(_seeded(4, "relu")(joined))
    return keras.Model({"pixels": pixels, "extra": extra},
                       ReconstructionPenalty()(reconstruction, joined))


def fixed_batch():
    """`keras.Input(batch_shape=(4, 64))`: every batch has 4 samples."""
    inputs = keras.Input(batch_shape=(4, 64))
    return keras.Model(inputs, _seeded(10, "softmax")(_seeded(16, "relu")(inputs)))


def stateful_rnn():
    """A stateful RNN: its state carries over from batch to batch (of 4 sequences)."""
    return keras.Sequential([
        keras.Input(batch_shape=(4, 6, 3)),
        keras.layers.SimpleRNN(4, stateful=True,
                               kernel_initializer=keras.initializers.GlorotUniform(seed=0),
                               recurrent_initializer=keras.initializers.Orthogonal(seed=0)),
        _seeded(1)])


def frozen():
    """No trainable weights: `fit` warns and runs (the loss and metrics are still computed)."""
    model = keras.Sequential([keras.Input((64,)), _seeded(16, "relu"), _seeded(10, "softmax")])
    model.trainable = False
    return model


class LogisticEndpoint(keras.layers.Layer):
    """The training guide's endpoint layer: the targets come in as an input, the layer adds
    its loss and updates a metric inside `call`, and returns the softmax."""

    def __init__(self, name=None):
        super().__init__(name=name)
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)
        self.accuracy_fn = keras.metrics.BinaryAccuracy(name="accuracy")

    def call(self, targets, logits, sample_weights=None):
        self.add_loss(self.loss_fn(targets, logits, sample_weights))
        self.accuracy_fn.update_state(targets, logits, sample_weights)
        return keras.ops.softmax(logits)


def guide_endpoint():
    """Two inputs, the targets among them, compiled without a loss: `fit(data)` with no `y`."""
    inputs = keras.Input((3,), name="inputs")
    targets = keras.Input((10,), name="targets")
    logits = _seeded(10)(inputs)
    return keras.Model([inputs, targets], LogisticEndpoint(name="predictions")(targets, logits))


class CustomRNN(keras.layers.Layer):
    """The functional API guide's RNN: a Python loop over time from a state of zeros of the
    static batch size (hence `batch_shape` on the model's input)."""

    def __init__(self, units=32):
        super().__init__()
        self.units = units
        self.projection_1 = _seeded(units, "tanh")
        self.projection_2 = _seeded(units, "tanh")
        self.classifier = _seeded(1)

    def call(self, inputs):
        outputs, state = [], keras.ops.zeros((inputs.shape[0], self.units))
        for t in range(inputs.shape[1]):
            state = self.projection_1(inputs[:, t, :]) + self.projection_2(state)
            outputs.append(state)
        return self.classifier(keras.ops.stack(outputs, axis=1))


def guide_rnn():
    inputs = keras.Input(batch_shape=(16, 10, 5))
    conv = keras.layers.Conv1D(32, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=0))
    return keras.Model(inputs, CustomRNN()(conv(inputs)))


def _endpoint_data():
    rng = np.random.default_rng(0)  # float64, as the guide's np.random.random
    return {"inputs": rng.random((40, 3)), "targets": rng.random((40, 10))}, None, dict(batch_size=BATCH)


def _rnn_data():
    rng = np.random.default_rng(0)
    return rng.random((64, 10, 5)), rng.random((64, 8, 1)), dict(batch_size=16)


def _digits(n=N_TRAIN):
    x, y, x_val, y_val = digits_arrays(n)
    return x, y, x_val, y_val


def _arrays(**fit_args):
    def data():
        x, y, x_val, y_val = _digits()
        return x, y, dict(batch_size=BATCH, validation_data=(x_val, y_val), **fit_args)
    return data


def _no_targets():
    x = _digits()[0]
    return x, None, dict(batch_size=BATCH)


def _dict_no_targets():
    x = _digits()[0]
    return {"pixels": x, "extra": x[:, :3] * 2.0}, None, dict(batch_size=BATCH)


def _fixed(n=32):
    def data():
        x, y, x_val, y_val = _digits()
        return x[:n], y[:n], dict(batch_size=4, validation_data=(x_val[:8], y_val[:8]))
    return data


def _sequences():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 3)).astype("float32")
    return x, x.sum(axis=(1, 2))[:, None].astype("float32"), dict(batch_size=4)


def _running_out():
    """4 batches of 32 and `steps_per_epoch=3`: the second epoch gets 1 batch, the third starts
    again at the first, as under `fit`."""
    x, y = _digits(128)[:2]
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), None, dict(steps_per_epoch=3)


def _running_out_unknown_length():
    """The same, filtered: a dataset whose length TensorFlow cannot tell until it ends."""
    dataset, _, args = _running_out()
    return dataset.filter(lambda x, y: True), None, args


def _empty(validation):
    def data():
        x, y, x_val, y_val = _digits()
        if validation:
            return x, y, dict(batch_size=BATCH, validation_data=(x_val[:0], y_val[:0]))
        return x[:0], y[:0], dict(batch_size=BATCH, validation_data=(x_val, y_val))
    return data


RAN_OUT = r"ran out of data"
# Each row: the model, compile's arguments, the data (x, y, fit's other arguments), the warning
# both loops give (or None), the history keys both report.
ROWS = {
    "unbuilt-Sequential": (unbuilt_sequential, dict(loss=SPARSE, metrics=["accuracy"]), _arrays(),
                           None, ["accuracy", "loss", "val_accuracy", "val_loss"]),
    "no-targets-add_loss": (autoencoder, {}, _no_targets, None, ["loss"]),
    "no-targets-dict-inputs": (dict_autoencoder, {}, _dict_no_targets, None, ["loss"]),
    "fixed-batch-size": (fixed_batch, dict(loss=SPARSE), _fixed(), None, ["loss", "val_loss"]),
    "stateful-RNN": (stateful_rnn, dict(loss="mse"), _sequences, None, ["loss"]),
    "no-trainable-weights": (frozen, dict(loss=SPARSE, metrics=["accuracy"]), _arrays(),
                             "does not have any trainable weights",
                             ["accuracy", "loss", "val_accuracy", "val_loss"]),
    "steps_per_epoch-data-run-out": (unbuilt_sequential, dict(loss=SPARSE), _running_out, RAN_OUT,
                                     ["loss"]),
    "steps_per_epoch-unknown-length-run-out": (unbuilt_sequential, dict(loss=SPARSE),
                                               _running_out_unknown_length, RAN_OUT, ["loss"]),
    "initial_epoch": (frozen, dict(loss=SPARSE), _arrays(initial_epoch=2),
                      "does not have any trainable weights", ["loss", "val_loss"]),
    "empty-training-data": (unbuilt_sequential, dict(loss=SPARSE), _empty(validation=False),
                            RAN_OUT, ["val_loss"]),
    "empty-validation-data": (unbuilt_sequential, dict(loss=SPARSE), _empty(validation=True),
                              RAN_OUT, ["loss"]),
    "guide-LogisticEndpoint": (guide_endpoint, {}, _endpoint_data, None, ["accuracy", "loss"]),
    "guide-CustomRNN": (guide_rnn, dict(loss="mse"), _rnn_data, None, ["loss"]),
}
GUIDE_ROWS = [row for row in ROWS if row.startswith("guide-")]


def _run(loop, row, mode, k, **train_args):
    """`(history, weights, epochs)` of one run of `row` under `loop`."""
    make, compile_args, data, warning, _ = ROWS[row]
    keras.utils.set_random_seed(0)
    model = make()
    x, y, fit_args = data()
    optimizer = keras.optimizers.Adam(1e-2)
    expect = pytest.warns(UserWarning, match=warning) if warning else contextlib.nullcontext()
    with expect:
        if loop == "fit":
            model.compile(optimizer, steps_per_execution=k, run_eagerly=mode == "eager",
                          jit_compile=mode == "xla", **compile_args)
            history = model.fit(x, y, epochs=EPOCHS, verbose=0, shuffle=False, **fit_args)
        else:
            history = train(model, x, y, epochs=EPOCHS, verbose=0, shuffle=False, mode=mode,
                            steps_per_execution=k, optimizer=optimizer, **compile_args, **fit_args,
                            **train_args)
    return history.history, model.get_weights(), history.epoch


# fit(steps_per_execution=2) overruns a `steps_per_epoch` that 2 does not divide (pinned in
# tests/test_fit_parity.py): that row holds one step per call.
CASES = [pytest.param(row, *variant.values, id=f"{row}-{variant.id}", marks=variant.marks)
         for row in ROWS for variant in VARIANTS
         if not (row.startswith("steps_per_epoch") and variant.values[0][1] > 1)]
CASES += [pytest.param(row, ("function", 4), id=f"{row}-function-k4") for row in GUIDE_ROWS]


# On data of unknown length, the call that finds the data exhausted runs part of `fit`'s step:
# the ops that do not read the batch (the optimizer's step counter) run before the error ends
# the call, so Adam's bias correction counts a step that never trained. `train` runs nothing on
# that call: it equals `fit` on the same data of known length, where no such call is made.
SAME_AS_FIT_OF = {"steps_per_epoch-unknown-length-run-out": "steps_per_epoch-data-run-out"}


@pytest.mark.parametrize(("row", "variant"), CASES)
def test_train_takes_what_fit_takes(row, variant):
    mode, k = variant
    ours, theirs = _run("train", row, mode, k), _run("fit", SAME_AS_FIT_OF.get(row, row), mode, k)
    assert sorted(theirs[0]) == ROWS[row][4]  # what fit reports, pinned
    assert_same_training(ours[:2], theirs[:2], atol=ATOL)
    assert ours[2] == theirs[2]
    if row == "initial_epoch":
        assert ours[2] == [2]


@pytest.mark.parametrize("loop, iterations", [("fit", 8), ("train", 7)])
def test_the_call_that_finds_unknown_length_data_exhausted_counts_no_step(loop, iterations):
    # 4 batches, steps_per_epoch=3, 3 epochs: 3 + 1 + 3 = 7 steps train. fit's optimizer
    # counts 8: its exhausted call in epoch 2 advanced the counter.
    keras.utils.set_random_seed(0)
    model = unbuilt_sequential()
    data, _, args = _running_out_unknown_length()
    optimizer = keras.optimizers.Adam(1e-2)
    batches = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(1))
    ends = []
    with pytest.warns(UserWarning, match=RAN_OUT):
        if loop == "fit":
            model.compile(optimizer, loss=SPARSE)
            model.fit(data, epochs=EPOCHS, verbose=0, shuffle=False, callbacks=[batches], **args)
        else:
            train(model, data, epochs=EPOCHS, verbose=0, optimizer=optimizer, loss=SPARSE,
                  callbacks=[batches], **args)
    assert len(ends) == 7
    assert int(optimizer.iterations) == iterations


def test_initial_epoch_with_a_fresh_checkpoint_folder_starts_there(tmp_path):
    ours = _run("train", "initial_epoch", "function", 1, checkpoint_dir=str(tmp_path))
    theirs = _run("fit", "initial_epoch", "function", 1)
    assert ours[2] == theirs[2] == [2]
    assert_same_training(ours[:2], theirs[:2])


def test_a_checkpoint_still_decides_where_a_rerun_resumes_whatever_its_initial_epoch(tmp_path):
    x, y, *_ = _digits()
    runs = []
    for epochs, initial in ((2, 0), (3, 0)):
        keras.utils.set_random_seed(0)
        history = train(unbuilt_sequential(), x, y, loss=SPARSE, optimizer="sgd", epochs=epochs,
                        initial_epoch=initial, verbose=0, checkpoint_dir=str(tmp_path))
        runs.append(history.epoch)
    assert runs == [[0, 1], [2]]


@pytest.mark.parametrize("pair", ["tuple", "list", "with-weights"])
def test_the_old_train_call_with_a_pair_names_the_new_form(pair):
    x, y, *_ = _digits()
    data = {"tuple": (x, y), "list": [x, y], "with-weights": (x, y, np.ones(len(y)))}[pair]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), _seeded(10, "softmax")])
    before = model.get_weights()
    kind = "list" if pair == "list" else "tuple"
    with pytest.raises(ValueError, match=rf"`train` takes `fit`'s arguments: train\(model, x, y, "
                                         rf"\.\.\.\), not train\(model, \(x, y\)\)\. Received: "
                                         rf"x=a {kind} of {len(data)} items and y=None"):
        train(model, data, loss=SPARSE, optimizer="sgd", verbose=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
