"""Mixed precision as Keras does it: every layer and model passes its dtype policy on, outputs
are float32, `train` scales the loss under `mixed_float16` and matches `fit` under each policy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import (
    ConvModule,
    InceptionModel,
    MiniInception,
    ReconstructionRegressor,
    train,
)
from spec_impl.precision import POLICIES, global_policy, is_mixed, output_dtype
from spec_impl.registry import MODELS
from spec_impl.testing import (
    MIXED_POLICIES,
    assert_allclose,
    assert_same_training,
    check_mixed_precision,
    digits_arrays,
    digits_mlp,
    run_layer_test,
)
from spec_impl.trainer.engine import Trainer

RNG = np.random.default_rng(0)
LOSS_SCALE = 2.0**15  # keras.optimizers.LossScaleOptimizer's initial_scale


def _inputs(spec, batch=2):
    if spec.name == "customer_ticket_model":
        return {k: RNG.random((batch, n)).astype("float32")
                for k, n in (("title", 10_000), ("text_body", 10_000), ("tags", 100))}
    if spec.name.startswith("ticket"):
        return [RNG.random((batch, n)).astype("float32") for n in (10_000, 10_000, 100)]
    return RNG.random((batch, *spec.input_shape)).astype("float32")


@pytest.mark.parametrize("policy", MIXED_POLICIES)
@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_under_a_global_mixed_policy(name, policy):
    # Variables float32, every hidden layer in the compute dtype, one float32 layer per output.
    spec = MODELS[name]
    x = _inputs(spec)
    with global_policy(policy):
        outputs = tf.nest.flatten(spec.build(spec.input_shape, spec.num_classes)(x))
    check_mixed_precision(lambda: spec.build(spec.input_shape, spec.num_classes), x, policy,
                          expected_float32_layers=len(outputs))


def test_global_policy_is_restored_after_the_block():
    with global_policy("mixed_bfloat16"):
        assert keras.config.dtype_policy().name == "mixed_bfloat16"
    assert keras.config.dtype_policy().name == "float32"


@pytest.mark.parametrize("cls,shape", [(MiniInception, (32, 32, 3)), (InceptionModel, (28, 28, 1))],
                         ids=["MiniInception", "InceptionModel"])
def test_inception_models_contract(cls, shape, tmp_path):
    x = RNG.random((2, *shape)).astype("float32")
    run_layer_test(lambda **kw: cls(10, **kw), x, (10,), tmp_path=tmp_path,
                   expected_float32_layers=1, loss="sparse_categorical_crossentropy",
                   train_target=np.array([1, 3]))


def test_reconstruction_regressor_contract(tmp_path):
    x = RNG.random((4, 3)).astype("float32")
    # 5 hidden + reconstruction + output Dense layers: 14 weights.
    run_layer_test(lambda **kw: ReconstructionRegressor(2, **kw), x, (2,), tmp_path=tmp_path,
                   expected_float32_layers=1, expected_num_trainable_weights=14)


def test_the_check_fails_for_a_composite_layer_that_keeps_its_policy():
    class Forgetful(keras.layers.Layer):  # the documents' habit: sub-layers made without dtype
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    x = RNG.random((2, 4)).astype("float32")
    with pytest.raises(AssertionError, match=r"output dtype float32, expected float16"):
        check_mixed_precision(lambda **kw: Forgetful(**kw), x, "mixed_float16")


def test_conv_module_computes_in_bfloat16():
    # Before the policy was passed on, this module silently computed in float32.
    module = ConvModule(4, dtype="mixed_bfloat16")
    out = module(RNG.random((1, 8, 8, 3)).astype("float32"))
    assert out.dtype == tf.bfloat16
    assert module.conv.compute_dtype == module.bn.compute_dtype == "bfloat16"
    assert {w.dtype for w in module.weights} == {"float32"}


def test_output_dtype_is_float32_only_under_mixed_policies():
    assert [output_dtype(p) for p in POLICIES] == ["float32", "float32", "float32"]
    assert output_dtype("float64") == "float64"
    assert [is_mixed(p) for p in POLICIES] == [False, True, True]


# ---- loss scaling ----

TINY = 1e-9  # makes d(loss)/d(hidden activations) about 1e-9: below float16's 6e-8


def tiny_mse(y, p):
    return TINY * tf.reduce_mean(tf.square(y - p))


def underflow_model():
    with global_policy("mixed_float16"):
        return keras.Sequential([keras.Input((4,)),
                                 keras.layers.Dense(4, kernel_initializer="ones", name="hidden"),
                                 keras.layers.Dense(1, kernel_initializer="ones", name="out",
                                                    dtype=output_dtype())])


def underflow_data():
    return np.full((8, 4), 0.5, "float32"), np.zeros((8, 1), "float32")


def test_float16_gradients_underflow_without_loss_scaling():
    model = underflow_model()
    x, y = underflow_data()
    with tf.GradientTape() as tape:
        loss = tiny_mse(y, model(x, training=True))
    kernel = model.get_layer("hidden").kernel
    assert np.count_nonzero(tape.gradient(loss, kernel)) == 0  # all 16 entries underflowed
    assert float(loss) > 0


def test_train_scales_the_loss_and_the_hidden_layer_learns():
    model = underflow_model()
    x, y = underflow_data()
    reference = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4, kernel_initializer="ones"),
                                  keras.layers.Dense(1, kernel_initializer="ones")])
    with tf.GradientTape() as tape:  # the float32 gradient, the exact one
        loss = tiny_mse(y, reference(x))
    exact = tape.gradient(loss, reference.layers[0].kernel).numpy()
    lr = 1e6  # so that a 1e-9 gradient moves a weight of 1.0 visibly
    train(model, x, y, shuffle=False, loss=tiny_mse, optimizer=keras.optimizers.SGD(lr),
          batch_size=8, verbose=0)
    optimizer = model.optimizer  # what compile made of SGD
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert float(optimizer.dynamic_scale) == LOSS_SCALE  # one finite step: scale unchanged
    moved = model.get_layer("hidden").kernel.numpy() - 1.0
    # float16 keeps ~3 significant digits of the scaled gradient: rtol 1e-2.
    assert_allclose(moved, -lr * exact, rtol=1e-2, atol=0)


def test_train_keeps_a_loss_scale_optimizer_it_is_given():
    with global_policy("mixed_float16"):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    given = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.1), initial_scale=8.0)
    trainer = Trainer(model, loss="mse", optimizer=given)
    assert trainer.optimizer is given


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_no_loss_scaling_without_float16(policy):
    with global_policy(policy):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    trainer = Trainer(model, loss="mse", optimizer="sgd")
    assert not isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)


# ---- train against fit, each policy, each mode ----

@pytest.fixture(scope="module")
def digits():
    return digits_arrays(96)[:2]


def _mlp(policy, seed=0):
    with global_policy(policy):
        return digits_mlp(32, seed=seed)


# `fit` is run the way `train` runs (eagerly, as a tf.function, or XLA-compiled), so both execute
# the same ops on the same dtypes: they agree to float32 round-off whatever the policy (measured:
# bit-identical). The tolerance is a few float32 ulps at weights of size ~0.3 (ulp ~3e-8), in case a
# thread pool splits a reduction differently; a wider one would hide a lost policy (float16 moves
# the weights ~8e-6 from float32's). The test also checks that the weights moved well past it.
ROUND_OFF = 1e-7


def _fit_and_train(policy, mode, x, y):
    reference = _mlp(policy)
    initial = reference.get_weights()
    reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                      run_eagerly=mode == "eager", jit_compile=mode == "xla")
    fit = reference.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    model = _mlp(policy, seed=1)
    model.set_weights(initial)
    history = train(model, x, y, shuffle=False, loss="sparse_categorical_crossentropy",
                    optimizer=keras.optimizers.SGD(0.1), epochs=2, batch_size=32, mode=mode,
                    verbose=0).history
    return initial, reference, fit, model, history


@pytest.mark.parametrize("mode", ["eager", "function", "xla"])
@pytest.mark.parametrize("policy", POLICIES)
def test_train_matches_fit_under_each_policy(policy, mode, digits):
    initial, reference, fit, model, history = _fit_and_train(policy, mode, *digits)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (
        policy == "mixed_float16")
    assert {w.dtype for w in model.weights} == {"float32"}
    assert_same_training((history, model.get_weights()), (fit, reference.get_weights()),
                         atol=ROUND_OFF)
    moved = np.concatenate([np.abs(w - w0).ravel()
                            for w, w0 in zip(model.get_weights(), initial, strict=True)])
    assert np.median(moved) > 1000 * ROUND_OFF  # measured: ~8.6e-4


def test_the_policies_train_to_different_weights(digits):
    """The comparison above can fail: a policy that was silently dropped changes the weights by
    far more than the round-off it is held to."""
    weights = {policy: _fit_and_train(policy, "function", *digits)[3].get_weights()
               for policy in POLICIES}
    for policy in ("mixed_float16", "mixed_bfloat16"):
        gap = max(np.abs(a - b).max() for a, b in zip(weights[policy], weights["float32"], strict=True))
        assert gap > 10 * ROUND_OFF, (policy, gap)  # measured: float16 7.7e-6, bfloat16 4.3e-4
