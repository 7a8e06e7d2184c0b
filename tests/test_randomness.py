"""Randomness as `fit` draws it: models that draw in their own step or in their layers, trained
by `train` and by `fit` from the same weights on the same batches.

- a layer that declares `supports_jit = False` (Keras's random augmentation layers): `mode="xla"`
  runs as `fit(jit_compile=True)` runs it, without XLA and with a warning; `mode="auto"` never
  times XLA for it;
- a stateful random op in a model's own `train_step` draws a new value at every step, at every
  number of steps per call, as under `fit`.
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import train
from spec_impl.testing import assert_same_training
from spec_impl.trainer.engine import NO_JIT, Trainer

BATCH, SAMPLES = 8, 32
ATOL = 1e-6  # the same ops in the same order: only float32 round-off of fused kernels


def _seeded(units, activation=None):
    return keras.layers.Dense(units, activation=activation,
                              kernel_initializer=keras.initializers.GlorotUniform(seed=0))


def augmented_classifier():
    """SimCLR's augmenter in front of a small classifier: `RandomTranslation` and `RandomZoom`
    declare `supports_jit = False` (no XLA kernel for their projective transform)."""
    return keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.RandomFlip("horizontal", seed=1),
        keras.layers.RandomTranslation(0.1, 0.1, seed=2),
        keras.layers.RandomZoom(0.2, seed=3),
        keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=0)),
        keras.layers.GlobalAveragePooling2D(),
        _seeded(3, "softmax")])


def _images():
    rng = np.random.default_rng(0)
    return (rng.random((SAMPLES, 12, 12, 1)).astype("float32"),
            rng.integers(0, 3, SAMPLES).astype("int32"))


def _augmented_run(loop, k):
    keras.utils.set_random_seed(0)
    model = augmented_classifier()
    x, y = _images()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if loop == "fit":
            model.compile("adam", "sparse_categorical_crossentropy", jit_compile=True,
                          steps_per_execution=k)
            history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
        else:
            history = train(model, x, y, optimizer="adam", loss="sparse_categorical_crossentropy",
                            batch_size=BATCH, epochs=2, shuffle=False, verbose=0, mode="xla",
                            steps_per_execution=k)
    return (history.history, model.get_weights()), [str(w.message) for w in caught]


@pytest.mark.parametrize("k", [1, 2])
def test_xla_on_a_model_that_declares_no_jit_runs_as_fit_runs_it(k):
    (ours, our_warnings), (theirs, their_warnings) = _augmented_run("train", k), \
        _augmented_run("fit", k)
    assert "Model doesn't support `jit_compile=True`. Proceeding with `jit_compile=False`." \
        in their_warnings
    mine = [w for w in our_warnings if NO_JIT in w]
    assert mine == [
        "Sequential declares that it cannot be compiled with XLA: random_translation "
        "(RandomTranslation), random_zoom (RandomZoom) set supports_jit=False. mode='xla' runs "
        "as mode='function', as fit(jit_compile=True) runs it without XLA."]
    assert_same_training(ours, theirs, atol=ATOL)


def test_auto_never_times_xla_for_a_model_that_declares_no_jit():
    keras.utils.set_random_seed(0)
    trainer = Trainer(augmented_classifier(), optimizer="adam",
                      loss="sparse_categorical_crossentropy", mode="auto")
    assert trainer.candidates[0] == ("function",)
    keras.utils.set_random_seed(0)
    plain = keras.Sequential([keras.Input((4,)), _seeded(2)])
    assert Trainer(plain, loss="mse", mode="auto").candidates[0] == ("function", "xla")


# ---- a model drawing in its own step ----

class NoisyRegressor(keras.Model):
    """A model whose own `train_step` adds noise from a stateful `tf.random.normal` (the GAN
    examples' latent vectors) and reports its first value."""

    def __init__(self):
        super().__init__()
        self.dense = _seeded(1)
        self.tracker = keras.metrics.Mean(name="loss")

    def call(self, x):
        return self.dense(x)

    @property
    def metrics(self):
        return [self.tracker]

    def draw(self, shape):
        return tf.random.normal(shape)

    def train_step(self, data):
        x, y = data
        noise = self.draw(tf.shape(y))
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(self(x) - y - noise))
        gradients = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        self.tracker.update_state(loss)
        return {"loss": self.tracker.result(), "noise": noise[0, 0]}


class NoiseOfEachCall(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.noise = []

    def on_train_batch_end(self, batch, logs=None):
        self.noise.append(float(logs["noise"]))


def _noisy_run(loop, mode, k, model_class):
    keras.utils.set_random_seed(0)
    model = model_class()
    model(np.zeros((1, 3), "float32"))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(SAMPLES, 3)).astype("float32"), np.ones((SAMPLES, 1), "float32")
    noise = NoiseOfEachCall()
    if loop == "fit":
        model.compile(optimizer="sgd", run_eagerly=mode == "eager", steps_per_execution=k)
        history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                            callbacks=[noise])
    else:
        history = train(model, x, y, optimizer="sgd", batch_size=BATCH, epochs=2, shuffle=False,
                        verbose=0, mode=mode, steps_per_execution=k, callbacks=[noise])
    return (history.history, model.get_weights()), noise.noise


@pytest.mark.parametrize("mode, k", [("function", 1), ("function", 2), ("function", 4),
                                     ("eager", 1), ("eager", 2)])
@pytest.mark.parametrize("drawn_by", ["stateful-op", "SeedGenerator"])
def test_a_models_own_step_draws_anew_at_every_step_of_a_call_as_under_fit(drawn_by, mode, k):
    # The noise the last step of each call drew, and the training it drove, equal fit's at the
    # same k (fit calls the step at one place in its loop: one op, one stream).
    model_class = {"stateful-op": NoisyRegressor, "SeedGenerator": SeededNoisyRegressor}[drawn_by]
    (ours, our_noise), (theirs, their_noise) = _noisy_run("train", mode, k, model_class), \
        _noisy_run("fit", mode, k, model_class)
    assert len(set(our_noise)) == len(our_noise) == 2 * SAMPLES // BATCH // k
    assert our_noise == pytest.approx(their_noise, abs=1e-6)
    assert_same_training(ours, theirs, atol=ATOL)


# ---- resumes ----

class SeededNoisyRegressor(NoisyRegressor):
    """The same model drawing with `keras.random` and a `SeedGenerator` (state in a variable
    the model tracks, so a checkpoint holds it)."""

    def __init__(self):
        super().__init__()
        self.seed_generator = keras.random.SeedGenerator(7)

    def draw(self, shape):
        return keras.random.normal(shape, seed=self.seed_generator)


def _resumable_run(model_class, mode, k, callbacks=(), **kwargs):
    keras.utils.set_random_seed(0)
    model = model_class()
    model(np.zeros((1, 3), "float32"))
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(SAMPLES, 3)).astype("float32"), np.ones((SAMPLES, 1), "float32")
    history = train(model, x, y, optimizer=keras.optimizers.Adam(1e-2), batch_size=BATCH,
                    epochs=3, shuffle=False, verbose=0, mode=mode, steps_per_execution=k,
                    callbacks=list(callbacks), **kwargs)
    return model, history


@pytest.mark.parametrize("mode, k", [("function", 1), ("eager", 1), ("xla", 2), ("function", 2)])
def test_a_model_drawing_with_a_seed_generator_resumes_bit_identically_mid_epoch(mode, k, tmp_path):
    from test_faults import SigtermAt, assert_same_state

    from spec_impl.trainer.preemption import TrainingPreempted

    reference, ref_history = _resumable_run(SeededNoisyRegressor, mode, k)
    with pytest.raises(TrainingPreempted):
        _resumable_run(SeededNoisyRegressor, mode, k, [SigtermAt(("batch", 1, 2))],
                       checkpoint_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no stateful-op warning: nothing to say
        model, history = _resumable_run(SeededNoisyRegressor, mode, k, checkpoint_dir=str(tmp_path))
    assert_same_state(model, reference)
    for name, values in history.history.items():
        assert values == ref_history.history[name][-len(values):], name


@pytest.mark.parametrize("mode", ["function", "eager"])
def test_the_first_checkpoint_of_a_model_drawing_with_stateful_ops_warns_once(mode, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _resumable_run(NoisyRegressor, mode, 1, checkpoint_dir=str(tmp_path), checkpoint_every=2)
    said = [str(w.message) for w in caught if "stateful random ops" in str(w.message)]
    assert len(said) == 1  # three epochs, six checkpoints: one warning
    assert said[0].startswith("NoisyRegressor's train step draws with stateful random ops, "
                              "whose state no checkpoint holds: RandomStandardNormal (")
    assert said[0].endswith("To resume exactly, draw with keras.random and a "
                            "keras.random.SeedGenerator the model tracks, or with a "
                            "tf.random.Generator it holds: their state is a variable, "
                            "checkpointed with the rest.")


# ---- the keras-io examples that draw in their own steps ----

class Sampling(keras.layers.Layer):
    """The VAE example's sampling layer, as its TensorFlow version writes it:
    `tf.keras.backend.random_normal` takes its op seed from NumPy's global generator when the
    step is traced."""

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = tf.keras.backend.random_normal(shape=tf.shape(z_mean))
        return z_mean + tf.exp(0.5 * z_log_var) * epsilon


class VAE(keras.Model):
    """The VAE example's model: its own `train_step`, three trackers, a KL term."""

    def __init__(self):
        super().__init__()
        inputs = keras.Input((16,))
        hidden = _seeded(8, "relu")(inputs)
        z_mean, z_log_var = _seeded(2)(hidden), _seeded(2)(hidden)
        self.encoder = keras.Model(inputs, [z_mean, z_log_var, Sampling()([z_mean, z_log_var])])
        self.decoder = keras.Sequential([keras.Input((2,)), _seeded(8, "relu"),
                                         _seeded(16, "sigmoid")])
        self.trackers = [keras.metrics.Mean(name=n) for n in ("loss", "reconstruction_loss",
                                                               "kl_loss")]

    @property
    def metrics(self):
        return self.trackers

    def train_step(self, data):
        with tf.GradientTape() as tape:
            z_mean, z_log_var, z = self.encoder(data)
            reconstruction = self.decoder(z)
            reconstruction_loss = tf.reduce_mean(tf.reduce_sum(
                keras.losses.binary_crossentropy(data[..., None], reconstruction[..., None]),
                axis=1))
            kl_loss = tf.reduce_mean(tf.reduce_sum(
                -0.5 * (1 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var)), axis=1))
            total = reconstruction_loss + kl_loss
        gradients = tape.gradient(total, self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights, strict=True))
        for tracker, value in zip(self.trackers, (total, reconstruction_loss, kl_loss),
                                  strict=True):
            tracker.update_state(value)
        return {t.name: t.result() for t in self.trackers}


class GAN(keras.Model):
    """The GAN examples' model: two networks, two optimizers, latent vectors from a stateful
    `tf.random.normal` in its own `train_step`."""

    def __init__(self, latent=4):
        super().__init__()
        self.latent = latent
        self.generator = keras.Sequential([keras.Input((latent,)), _seeded(8, "relu"),
                                           _seeded(16, "sigmoid")])
        self.discriminator = keras.Sequential([keras.Input((16,)), _seeded(8, "relu"), _seeded(1)])
        self.d_tracker, self.g_tracker = keras.metrics.Mean(name="d_loss"), \
            keras.metrics.Mean(name="g_loss")

    def compile(self, **kwargs):
        super().compile(**kwargs)
        self.d_optimizer, self.g_optimizer = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)
        self.loss_fn = keras.losses.BinaryCrossentropy(from_logits=True)

    @property
    def metrics(self):
        return [self.d_tracker, self.g_tracker]

    def train_step(self, real):
        batch = tf.shape(real)[0]
        fake = self.generator(tf.random.normal((batch, self.latent)))
        images = tf.concat([fake, real], axis=0)
        labels = tf.concat([tf.ones((batch, 1)), tf.zeros((batch, 1))], axis=0)
        with tf.GradientTape() as tape:
            d_loss = self.loss_fn(labels, self.discriminator(images))
        weights = self.discriminator.trainable_weights
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_loss, weights), weights, strict=True))
        with tf.GradientTape() as tape:
            fooled = self.discriminator(self.generator(tf.random.normal((batch, self.latent))))
            g_loss = self.loss_fn(tf.zeros((batch, 1)), fooled)
        weights = self.generator.trainable_weights
        self.g_optimizer.apply_gradients(zip(tape.gradient(g_loss, weights), weights, strict=True))
        self.d_tracker.update_state(d_loss)
        self.g_tracker.update_state(g_loss)
        return {"d_loss": self.d_tracker.result(), "g_loss": self.g_tracker.result()}


class Contrastive(keras.Model):
    """The SimCLR example's model, small: two random augmentations of each image (Keras's
    random layers, `supports_jit=False`), an encoder trained on their agreement with one
    optimizer, and a linear probe on the labels with another."""

    def __init__(self):
        super().__init__()
        self.augmenter = keras.Sequential([
            keras.Input((12, 12, 1)), keras.layers.RandomFlip("horizontal", seed=1),
            keras.layers.RandomTranslation(0.1, 0.1, seed=2), keras.layers.RandomZoom(0.2, seed=3)])
        self.encoder = keras.Sequential([
            keras.Input((12, 12, 1)),
            keras.layers.Conv2D(4, 3, kernel_initializer=keras.initializers.GlorotUniform(seed=0)),
            keras.layers.GlobalAveragePooling2D(), _seeded(4)])
        self.probe = keras.Sequential([keras.Input((4,)), _seeded(3)])
        self.c_tracker, self.p_tracker = keras.metrics.Mean(name="c_loss"), \
            keras.metrics.Mean(name="p_loss")

    def compile(self, **kwargs):
        super().compile(**kwargs)
        self.c_optimizer, self.p_optimizer = keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3)

    @property
    def metrics(self):
        return [self.c_tracker, self.p_tracker]

    def train_step(self, data):
        images, labels = data
        first, second = self.augmenter(images, training=True), self.augmenter(images, training=True)
        with tf.GradientTape() as tape:
            a = tf.math.l2_normalize(self.encoder(first, training=True), axis=1)
            b = tf.math.l2_normalize(self.encoder(second, training=True), axis=1)
            similarities = tf.matmul(a, b, transpose_b=True) / 0.1
            pairs = tf.range(tf.shape(a)[0])
            c_loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                pairs, similarities, from_logits=True))
        weights = self.encoder.trainable_weights
        self.c_optimizer.apply_gradients(zip(tape.gradient(c_loss, weights), weights, strict=True))
        with tf.GradientTape() as tape:
            p_loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
                labels, self.probe(self.encoder(images)), from_logits=True))
        weights = self.probe.trainable_weights
        self.p_optimizer.apply_gradients(zip(tape.gradient(p_loss, weights), weights, strict=True))
        self.c_tracker.update_state(c_loss)
        self.p_tracker.update_state(p_loss)
        return {"c_loss": self.c_tracker.result(), "p_loss": self.p_tracker.result()}


def _example_data(name):
    rng = np.random.default_rng(0)
    if name == "contrastive":
        return _images()
    return rng.random((SAMPLES, 16)).astype("float32"), None


EXAMPLES = {"VAE": VAE, "GAN": GAN, "contrastive": Contrastive}


def _example_run(loop, name, mode, k):
    keras.utils.set_random_seed(0)  # the weights, the layers' seed generators, NumPy's draws
    model = EXAMPLES[name]()
    x, y = _example_data(name)
    if loop == "fit":
        model.compile(optimizer=keras.optimizers.Adam(1e-3), run_eagerly=mode == "eager",
                      steps_per_execution=k)
        history = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = train(model, x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0,
                        mode=mode, steps_per_execution=k)
    return history.history, model.get_weights()


@pytest.mark.parametrize("mode, k", [("function", 1), ("function", 2), ("eager", 1), ("eager", 2)])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_keras_io_examples_that_draw_in_their_steps_equal_fit(name, mode, k):
    ours, theirs = _example_run("train", name, mode, k), _example_run("fit", name, mode, k)
    assert sorted(ours[0]) == sorted(theirs[0]) and len(ours[0][sorted(ours[0])[0]]) == 2
    assert_same_training(ours, theirs, atol=ATOL)


class CountedVAE(VAE):
    """The VAE, counting the traces of its step (in function mode a trace is a call)."""

    traces = []

    def train_step(self, data):
        CountedVAE.traces.append(1)
        return super().train_step(data)


def test_the_models_own_step_is_traced_as_often_as_under_fit(monkeypatch):
    # Each trace of the VAE's step takes an op seed from NumPy: one trace more than fit moves
    # every later draw (train traced the step once more to create its variables).
    monkeypatch.setitem(EXAMPLES, "VAE", CountedVAE)
    traces = {}
    for loop in ("fit", "train"):
        CountedVAE.traces.clear()
        _example_run(loop, "VAE", "function", 2)
        traces[loop] = len(CountedVAE.traces)
    assert traces["train"] == traces["fit"]  # 2 each here: tf.function's variable-creating
    assert traces["fit"] >= 1                  # first trace, then the one it runs
