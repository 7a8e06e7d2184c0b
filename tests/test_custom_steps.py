"""A model's own `train_step` and `test_step` under `train`, against `fit`.

The models are the ones the keras-io guide "Customizing what happens in fit()" walks through
(`compute_loss` and the compiled metrics; a loss and metrics of its own with `compile(optimizer)`
alone; sample weights; a `test_step`; a GAN with two optimizers and data without targets) and
document 002's `CustomModel`. Each trains twice from the same weights on the same batches, once
with `fit` and once with `train`, in each mode against the same execution on `fit`'s side, and
must end with the same history and weights: `train` calls the model's step, as `fit` does.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import CustomModel, train
from spec_impl.testing import assert_same_training, digits_arrays

N_TRAIN, BATCH, EPOCHS = 100, 32, 2  # 4 steps per epoch, the last one partial
SPARSE = "sparse_categorical_crossentropy"
VARIANTS = [
    pytest.param(("function", 1), id="function"),
    pytest.param(("eager", 1), id="eager", marks=pytest.mark.slow),
    pytest.param(("xla", 2), id="xla-k2", marks=pytest.mark.slow),
]
# float32 sums in another order (XLA fuses, eager does not), as in the parity table.
ATOL = 1e-5


class ComputeLossModel(keras.Model):
    """The guide's first step: `compute_loss` and the compiled metrics, by hand."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred)
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred)
        return {m.name: m.result() for m in self.metrics}


class OwnLossModel(keras.Model):
    """The guide's lower-level step: its own loss, trackers and `metrics`, `compile(optimizer)`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.mae_metric = keras.metrics.MeanAbsoluteError(name="mae")
        self.loss_fn = keras.losses.MeanSquaredError()

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.loss_fn(y, y_pred)
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.mae_metric.update_state(y, y_pred)
        return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

    @property
    def metrics(self):
        return [self.loss_tracker, self.mae_metric]


class WeightedModel(keras.Model):
    """The guide's step with sample weights, and its `test_step`."""

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return self._update(loss, y, y_pred, sample_weight)

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        y_pred = self(x, training=False)
        loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
        return self._update(loss, y, y_pred, sample_weight)

    def _update(self, loss, y, y_pred, sample_weight):
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(y, y_pred, sample_weight=sample_weight)
        return {m.name: m.result() for m in self.metrics}


class GAN(keras.Model):
    """The guide's GAN in small: two networks, two optimizers, `compile` of its own, data
    without targets, and logs that are not the model's metric names (`d_loss`, `g_loss`)."""

    LATENT = 4

    def __init__(self, features=8):
        super().__init__()
        self.discriminator = keras.Sequential([keras.Input((features,)), keras.layers.Dense(8, "relu"),
                                               keras.layers.Dense(1)])
        self.generator = keras.Sequential([keras.Input((self.LATENT,)), keras.layers.Dense(features)])
        self.seed_generator = keras.random.SeedGenerator(1337)

    def compile(self, d_optimizer, g_optimizer, loss_fn):
        super().compile()
        self.d_optimizer, self.g_optimizer, self.loss_fn = d_optimizer, g_optimizer, loss_fn
        self.d_tracker = keras.metrics.Mean(name="d_loss")
        self.g_tracker = keras.metrics.Mean(name="g_loss")

    @property
    def metrics(self):
        return [self.d_tracker, self.g_tracker]

    def train_step(self, real):
        batch = tf.shape(real)[0]
        noise = keras.random.normal((batch, self.LATENT), seed=self.seed_generator)
        fake = self.generator(noise)
        images = tf.concat([fake, real], axis=0)
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images))
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply(tape.gradient(d_loss, weights), weights)
        noise = keras.random.normal((batch, self.LATENT), seed=self.seed_generator)
        with tf.GradientTape() as tape:
            g_loss = self.loss_fn(tf.zeros((batch, 1)), self.discriminator(self.generator(noise)))
        weights = self.generator.trainable_weights
        self.g_optimizer.apply(tape.gradient(g_loss, weights), weights)
        self.d_tracker.update_state(d_loss)
        self.g_tracker.update_state(g_loss)
        return {"d_loss": self.d_tracker.result(), "g_loss": self.g_tracker.result()}


def _functional(cls, outputs=10, activation="softmax"):
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return cls(inputs, keras.layers.Dense(outputs, activation=activation)(hidden))


def _digits(with_weights=False, regression=False):
    """Digits for `fit`: with validation data, but for the regression (whose model has no
    `test_step` and no compiled loss to evaluate with, under `fit` as under `train`)."""
    x, y, x_val, y_val = digits_arrays(N_TRAIN)
    fit_args = dict(batch_size=BATCH, shuffle=False, validation_data=(x_val, y_val))
    if regression:
        y = (y / 10.0).astype("float32")
        del fit_args["validation_data"]
    if with_weights:
        fit_args["sample_weight"] = np.linspace(0.5, 1.5, len(y)).astype("float32")
    return x, y, fit_args


# Each case: the model, how it is compiled (on both sides, before fit or train), the data.
CASES = {
    "guide-compute_loss": (lambda: _functional(ComputeLossModel),
                           lambda m: m.compile(keras.optimizers.Adam(1e-2), SPARSE, metrics=["accuracy"]),
                           lambda: _digits()),
    "guide-own-loss-and-metrics": (lambda: _functional(OwnLossModel, 1, None),
                                   lambda m: m.compile(keras.optimizers.Adam(1e-2)),
                                   lambda: _digits(regression=True)),
    "guide-sample_weight-test_step": (lambda: _functional(WeightedModel),
                                      lambda m: m.compile(keras.optimizers.Adam(1e-2), SPARSE,
                                                          metrics=["accuracy"]),
                                      lambda: _digits(with_weights=True)),
    "document-002-CustomModel": (lambda: _functional(CustomModel),
                                 lambda m: m.compile(keras.optimizers.Adam(1e-2)),
                                 lambda: _digits()),
    "guide-GAN-no-targets": (GAN,
                             lambda m: m.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3),
                                                 keras.losses.BinaryCrossentropy(from_logits=True)),
                             lambda: (digits_arrays(N_TRAIN)[0][:, :8], None,
                                      dict(batch_size=BATCH, shuffle=False))),
}


def _run(loop, case, mode, k, epochs=EPOCHS, **train_args):
    """`(history, weights)` of one run of `case` under `loop` (`"fit"` or `"train"`)."""
    make, compile_model, data = CASES[case]
    keras.utils.set_random_seed(0)
    model = make()
    compile_model(model)
    if loop == "fit":
        model.run_eagerly, model.jit_compile = mode == "eager", mode == "xla"
        model.steps_per_execution = k
    x, y, fit_args = data()
    if loop == "fit":
        history = model.fit(x, y, epochs=epochs, verbose=0, **fit_args)
    else:
        history = train(model, x, y, epochs=epochs, verbose=0, mode=mode, steps_per_execution=k,
                        **fit_args, **train_args)
    return history.history, model.get_weights()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("case", list(CASES))
def test_train_runs_the_models_own_step_as_fit_does(case, variant):
    mode, k = variant
    ours, theirs = _run("train", case, mode, k), _run("fit", case, mode, k)
    assert_same_training(ours, theirs, atol=ATOL)
    if case == "guide-GAN-no-targets":
        assert sorted(ours[0]) == ["d_loss", "g_loss"]  # the step's own names, as fit logs them


@pytest.mark.parametrize("case", ["document-002-CustomModel", "guide-GAN-no-targets"])
def test_auto_runs_the_models_own_step_as_fit_does(case):
    """`mode="auto"` and `steps_per_execution="auto"` time and switch the model's own step
    (a GAN's with its two optimizers) and end as `fit` from the same weights."""
    ours, theirs = _run("train", case, "auto", "auto"), _run("fit", case, "function", 1)
    assert_same_training(ours, theirs, atol=ATOL)


class Raising(keras.Model):
    """A model whose `train_step` raises: `train` must call it and raise what it raises."""

    def train_step(self, data):
        raise NotImplementedError("this model's train_step was called")


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
def test_a_train_step_that_raises_makes_train_raise_the_same(mode):
    x, y, _ = _digits()
    for loop in ("fit", "train"):
        model = _functional(Raising)
        with pytest.raises(NotImplementedError, match="this model's train_step was called"):
            if loop == "fit":
                model.compile("sgd", SPARSE, run_eagerly=mode == "eager", jit_compile=mode == "xla")
                model.fit(x, y, verbose=0)
            else:
                train(model, x, y, optimizer="sgd", loss=SPARSE, mode=mode, verbose=0)


def test_on_nan_skip_is_refused_for_a_models_own_step():
    x, y, _ = _digits()
    with pytest.raises(ValueError, match=r"`on_nan='skip'` needs the package's own train step, "
                                         r"and CustomModel defines its own `train_step`: use "
                                         r"on_nan='stop'.*Received: on_nan='skip'"):
        train(_functional(CustomModel), x, y, optimizer="sgd", on_nan="skip", verbose=0)


@pytest.mark.parametrize("variant", [(m, 1) for m in ("eager", "function")] + [("xla", 2)],
                         ids=["eager", "function", "xla-k2"])
def test_a_non_finite_loss_the_step_returns_stops_the_run_at_its_step(variant):
    # A NaN target in the third batch makes that step's returned loss NaN. (A NaN input would
    # not do: a fused matmul + ReLU can map it to 0, leaving the loss finite and only the
    # gradients NaN, which a model's own step does not show the check.)
    mode, k = variant
    x, y, _ = _digits(regression=True)
    y = y.copy()
    y[70] = np.nan
    keras.utils.set_random_seed(0)
    with pytest.raises(FloatingPointError, match=r"Non-finite loss nan at epoch 1, step 3: "):
        train(_functional(OwnLossModel, 1, None), x, y, optimizer="sgd", batch_size=BATCH,
              shuffle=False, mode=mode, steps_per_execution=k, verbose=0)


def test_a_gan_writes_its_own_logs_to_tensorboard_and_resumes_from_its_checkpoint(tmp_path):
    # Three epochs straight against two, then a new model resumed from the checkpoint for the
    # third: the same weights (both optimizers' state restored); TensorBoard has a point per
    # step of each of the step's own logs.
    from spec_impl.testing import read_scalars

    first = _run("train", "guide-GAN-no-targets", "function", 1, checkpoint_dir=str(tmp_path / "c"),
                 log_dir=str(tmp_path / "tb"))
    straight = _run("train", "guide-GAN-no-targets", "function", 1, epochs=3)
    resumed = _run("train", "guide-GAN-no-targets", "function", 1, epochs=3,
                   checkpoint_dir=str(tmp_path / "c"))
    assert len(first[0]["d_loss"]) == 2 and len(resumed[0]["d_loss"]) == 1
    assert_same_training(({k: v[-1:] for k, v in resumed[0].items()}, resumed[1]),
                         ({k: v[-1:] for k, v in straight[0].items()}, straight[1]))
    scalars = read_scalars(tmp_path / "tb" / "train")
    assert sorted(scalars) == ["batch_d_loss", "batch_g_loss", "epoch_d_loss", "epoch_g_loss"]
    assert [step for step, _ in scalars["batch_d_loss"]] == list(range(1, 9))  # 4 steps x 2 epochs


class SigtermAtBatch(keras.callbacks.Callback):
    """A real SIGTERM to this process as the call at `(epoch, step)` starts."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at, self.epoch = (epoch, step), 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


def test_a_gan_preempted_mid_epoch_resumes_bit_identical(tmp_path):
    # SIGTERM as step 2 of epoch 2 starts: the call finishes, a checkpoint is written at step
    # 3, and the rerun ends with the uninterrupted run's weights (both optimizers and the noise
    # generator's state restored).
    from spec_impl.trainer.preemption import TrainingPreempted

    straight = _run("train", "guide-GAN-no-targets", "function", 1)
    folder = str(tmp_path / "c")
    with pytest.raises(TrainingPreempted) as info:
        _run("train", "guide-GAN-no-targets", "function", 1, checkpoint_dir=folder,
             callbacks=[SigtermAtBatch(1, 2)])
    assert (info.value.epoch, info.value.step) == (1, 3)
    resumed = _run("train", "guide-GAN-no-targets", "function", 1, checkpoint_dir=folder)
    assert len(resumed[1]) == len(straight[1])
    for got, want in zip(resumed[1], straight[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert resumed[0]["d_loss"] == straight[0]["d_loss"][-1:]
