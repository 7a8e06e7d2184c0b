"""Inputs users really pass by mistake, tried on every loss, metric, layer and model.

For each, the outcome is the documented one: the same result as the Keras built-in the component
mirrors (integer and float64 inputs, empty batches, NaN and inf, a `(batch, 1)` target against
`(batch,)` predictions), or a `ValueError` naming the received value and what was expected
(wrong rank, wrong last dimension, mismatched `y_true` / `y_pred`, bad constructor arguments).
"""

import re

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec_impl import (
    ConvModule,
    DownsampleModule,
    Exponential,
    HuberLoss,
    HuberMetric,
    InceptionModule,
    MyDense,
    MyGaussianNoise,
    MyMultiLayer,
    ReconstructionRegressor,
    ResidualBlock,
    ResidualRegressor,
    RootMeanSquaredError,
    create_huber,
    huber_fn,
)
from spec_impl.registry import MODELS
from spec_impl.testing import assert_allclose, conv_keeps_input_channels_on_an_empty_batch
from spec_impl.trainer.keras_api import all_layers

F32 = "float32"
sizes = st.integers(1, 6)
thresholds = st.floats(0.1, 5.0)
# What users pass by mistake where a float32 batch is expected.
VALUE_MISTAKES = ["int", "float64", "empty", "nan", "inf"]


def mistaken(kind, shape, rng):
    """A float32 array of `shape`, spoiled the way `kind` says."""
    if kind == "empty":
        return np.zeros((0, *shape[1:]), F32)
    x = rng.normal(size=shape).astype(F32)
    if kind == "int":
        return np.round(3 * x).astype("int32")
    if kind == "float64":
        return x.astype("float64")
    if kind in ("nan", "inf"):
        x.flat[rng.integers(x.size)] = np.nan if kind == "nan" else np.inf
    return x


def assert_same(ours, theirs):
    """Equal values (NaN equal to NaN) and shapes, as NumPy arrays."""
    ours, theirs = keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6, equal_nan=True)


def raises(exception, *fragments):
    """`pytest.raises` whose message contains each fragment (Keras puts a layer's own message
    on the lines after its 'Exception encountered when calling ...')."""
    return pytest.raises(exception, match="(?s)" + ".*".join(map(re.escape, fragments)))


# ---- losses and metrics: the Huber family mirrors keras.losses.huber ----

@given(st.sampled_from(VALUE_MISTAKES + ["column_vs_flat"]), sizes, sizes, thresholds,
       st.integers(0, 2**16))
def test_huber_family_matches_keras_on_mistaken_values(kind, n, k, threshold, seed):
    rng = np.random.default_rng(seed)
    if kind == "column_vs_flat":  # y_true (n, 1) against y_pred (n,): squeezed, not broadcast
        y_true, y_pred = rng.normal(size=(n, 1)).astype(F32), rng.normal(size=(n,)).astype(F32)
    else:
        y_true, y_pred = mistaken(kind, (n, k), rng), mistaken(kind, (n, k), rng)
    # Integers: the reference is the same numbers in float32 (Keras's own `huber` computes in
    # the integer dtype and truncates; see the test below).
    ref_true, ref_pred = ((y_true.astype(F32), y_pred.astype(F32)) if kind == "int"
                          else (y_true, y_pred))
    per_sample = keras.losses.huber(ref_true, ref_pred, delta=threshold)  # mean over last axis
    elementwise = create_huber(threshold)(y_true, y_pred)
    assert_same(keras.ops.mean(elementwise, axis=-1), per_sample)
    metric, reference = HuberMetric(threshold), keras.metrics.MeanMetricWrapper(
        keras.losses.huber, delta=threshold)
    metric.update_state(y_true, y_pred)
    reference.update_state(ref_true, ref_pred)
    assert_same(metric.result(), reference.result())
    loss = HuberLoss(threshold)(y_true, y_pred)
    if kind == "empty":  # Keras's own Huber returns an empty array here; ours the mean, 0
        assert float(loss) == 0.0
    else:
        assert_same(loss, keras.losses.Huber(threshold)(ref_true, ref_pred))


def test_keras_huber_truncates_integer_predictions_ours_does_not():
    y_true, y_pred = np.zeros((2, 1), "int32"), np.ones((2, 1), "int32")  # error 1: huber 0.5
    assert float(keras.ops.mean(keras.losses.huber(y_true, y_pred))) == 0.0  # 0.5 * 1 in int32
    assert float(keras.ops.mean(huber_fn(y_true, y_pred))) == 0.5


@given(sizes, st.integers(2, 5), st.integers(1, 3))
def test_huber_family_names_mismatched_shapes(n, k, extra):
    y_true, y_pred = np.zeros((n, k), F32), np.zeros((n, k + extra), F32)
    expected = (f"Expected y_true and y_pred of one shape. Received: y_true.shape=({n}, {k}), "
                f"y_pred.shape=({n}, {k + extra})")
    for call in (lambda: huber_fn(y_true, y_pred), lambda: HuberLoss()(y_true, y_pred),
                 lambda: HuberMetric().update_state(y_true, y_pred)):
        with raises(ValueError, expected):
            call()


BAD_POSITIVE = [0, -1, -0.5, float("nan"), float("inf") * -1, "1", True, None, [1.0]]


@pytest.mark.parametrize("bad", BAD_POSITIVE, ids=repr)
def test_huber_family_refuses_bad_thresholds(bad):
    for make in (HuberLoss, HuberMetric, create_huber):
        with raises(ValueError, "Expected a positive threshold. Received: threshold=" + repr(bad)):
            make(bad)


@given(st.sampled_from(["empty", "nan", "float64"]), sizes, st.integers(2, 5), st.integers(0, 2**16))
def test_rmse_matches_sqrt_classes_times_keras_on_mistaken_values(kind, n, classes, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, 0 if kind == "empty" else n)
    p = mistaken(kind, (n, classes), rng)
    mine, theirs = RootMeanSquaredError(), keras.metrics.RootMeanSquaredError()
    mine.update_state(y, p)
    theirs.update_state(np.eye(classes, dtype=F32)[y], p)
    assert_same(mine.result(), np.sqrt(classes) * keras.ops.convert_to_numpy(theirs.result()))


@given(sizes, st.integers(2, 5))
def test_rmse_names_the_shapes_it_cannot_pair(n, classes):
    with raises(ValueError, "Expected class ids of shape (batch,) and probabilities of shape "
                            f"(batch, classes). Received: y_true.shape=({n},), y_pred.shape=({n},)"):
        RootMeanSquaredError().update_state(np.zeros(n, "int64"), np.zeros(n, F32))
    with raises(ValueError, f"y_true.shape=({n + 1},), y_pred.shape=({n}, {classes})"):
        RootMeanSquaredError().update_state(np.zeros(n + 1, "int64"), np.zeros((n, classes), F32))


# ---- layers: each beside the Keras layer it mirrors ----

def _dense_pair(width, units, seed):
    keras.utils.set_random_seed(seed)
    mine, theirs = MyDense(units), keras.layers.Dense(units)
    mine.build((None, width))
    theirs.build((None, width))
    theirs.set_weights(mine.get_weights())
    return mine, theirs


@given(st.sampled_from(VALUE_MISTAKES), sizes, sizes, sizes, st.integers(0, 2**16))
def test_my_dense_matches_dense_on_mistaken_values(kind, n, width, units, seed):
    mine, theirs = _dense_pair(width, units, seed)
    x = mistaken(kind, (n, width), np.random.default_rng(seed))
    assert_same(mine(x), theirs(x))


@given(sizes, st.integers(2, 6), sizes)
def test_my_dense_refuses_wrong_rank_and_width_as_dense_does(n, width, units):
    mine, theirs = _dense_pair(width, units, 0)
    for x, fragment in ((np.ones((n,), F32), "expected min_ndim=2, found ndim=1"),
                        (np.ones((n, width + 1), F32),
                         f"expected axis -1 of input shape to have value {width}")):
        for layer in (mine, theirs):
            with raises(ValueError, fragment):
                layer(x)


@given(st.sampled_from(VALUE_MISTAKES + ["rank3"]), sizes, sizes, st.integers(0, 2**16))
def test_weightless_layers_match_keras(kind, n, width, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, n, width)).astype(F32) if kind == "rank3" else mistaken(kind, (n, width), rng)
    assert_same(Exponential()(x), keras.layers.Activation("exponential")(x))
    # At inference both noise layers are the identity, whatever the input.
    assert_same(MyGaussianNoise(0.5)(x), keras.layers.GaussianNoise(0.5)(x))


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "0.1", None, True], ids=repr)
def test_gaussian_noise_refuses_bad_stddev(bad):
    with raises(ValueError, f"Expected a non-negative stddev. Received: stddev={bad!r}"):
        MyGaussianNoise(bad)


@given(sizes, sizes, st.integers(1, 3))
def test_multi_layer_names_mismatched_inputs(n, width, extra):
    with raises(ValueError, f"Expected two inputs of one shape. Received: ({n}, {width}) and "
                            f"({n}, {width + extra})"):
        MyMultiLayer()([np.ones((n, width), F32), np.ones((n, width + extra), F32)])
    with raises(ValueError, "Expected a pair of inputs [X1, X2]. Received: list of 3"):
        MyMultiLayer()([np.ones((n, width), F32)] * 3)


@given(st.sampled_from(["int", "float64"]), sizes, st.integers(2, 6), st.integers(0, 2**16))
def test_residual_block_takes_int_and_float64_like_float32(kind, n, width, seed):
    x = mistaken(kind, (n, width), np.random.default_rng(seed))
    keras.utils.set_random_seed(seed)
    block = ResidualBlock(2, width)
    assert_same(block(x), block(x.astype(F32)))


@given(sizes, st.integers(2, 6))
def test_residual_block_names_the_width_it_needs(n, width):
    with raises(ValueError, f"ResidualBlock expects inputs of shape (batch, {width}). "
                            f"Received: shape=({width},)"):
        ResidualBlock(2, width)(np.ones((width,), F32))
    with raises(ValueError, f"the input width must be n_neurons={width}. "
                            f"Received: input_shape=({n}, {width + 1})"):
        ResidualBlock(2, width)(np.ones((n, width + 1), F32))


# ---- constructors: every counting argument of every component ----

COUNTS = [
    ("units", lambda v: MyDense(v)),
    ("n_layers", lambda v: ResidualBlock(v, 4)),
    ("n_neurons", lambda v: ResidualBlock(2, v)),
    ("kernel_num", lambda v: ConvModule(v)),
    ("kernel_size1x1", lambda v: InceptionModule(v, 2)),
    ("kernel_size3x3", lambda v: InceptionModule(2, v)),
    ("kernel_size", lambda v: DownsampleModule(v)),
    ("output_dim", lambda v: ResidualRegressor(v)),
    ("output_dim", lambda v: ReconstructionRegressor(v)),
    *[("num_classes", lambda v, n=n: MODELS[n].build(MODELS[n].input_shape, v))
      for n in ("mini_inception", "inception_model", "sequential_cnn", "functional_cnn",
                "subclassed_cnn", "mnist_mlp")],
]


@given(st.sampled_from(COUNTS),
       st.one_of(st.integers(-5, 0), st.floats(0.5, 9.5).filter(lambda f: f != int(f)),
                 st.text(max_size=3), st.booleans(), st.none()))
def test_counts_refuse_what_is_not_a_positive_integer(case, bad):
    name, make = case
    with raises(ValueError, f"Expected a positive integer for `{name}`. Received: {name}={bad!r}"):
        make(bad)


# ---- models: every registered model, built, fed what users pass by mistake ----

def _model_inputs(name, x_for):
    if name == "customer_ticket_model":
        return {k: x_for((n,)) for k, n in (("title", 10_000), ("text_body", 10_000), ("tags", 100))}
    if name.startswith("ticket"):
        return [x_for((n,)) for n in (10_000, 10_000, 100)]
    return x_for(MODELS[name].input_shape)


@pytest.fixture(scope="module")
def built_models():
    return {name: spec.build(spec.input_shape, spec.num_classes) for name, spec in MODELS.items()}


# Keras's GlobalMaxPooling2D refuses a batch of 0 ("Cannot compute the max of an empty tensor");
# the two CNNs that pool with it (document 000's choice) inherit that.
MAX_POOLED = ("sequential_cnn", "functional_cnn")
EMPTY_CONV_ERROR = "Incompatible shapes: [0,"


def has_layer(model, kind):
    return any(isinstance(layer, kind) for layer in all_layers(model))


def has_conv(model):
    return has_layer(model, keras.layers.Conv2D)


# TensorFlow's MaxPool kernel compares with `>`, so it skips NaN: a window of NaN alone pools to
# the kernel's starting value, float32's lowest in eager and graph mode (-inf under XLA), and
# the NaN goes on as a finite -3.4e38. `reduce_max` (GlobalMaxPooling2D) propagates NaN.
LOWEST_F32 = float(np.finfo(np.float32).min)
# Downstream of that -3.4e38 (batch norm, convolutions, logits), values stay beyond this or
# overflow to inf or NaN; a logit of inputs in [0, 2] is many orders of magnitude below it.
FAR_BEYOND_ANY_LOGIT = 1e30


@pytest.mark.parametrize("jit_compile,value", [(False, LOWEST_F32), (True, -np.inf)])
def test_tensorflow_max_pooling_drops_nan(jit_compile, value):
    import tensorflow as tf

    x = np.ones((2, 4, 4, 1), F32)
    x[0] = np.nan  # every window of the first sample is NaN
    x[1, 0, 0, 0], x[1, 0, 1, 0] = np.nan, 5.0  # one window holds a NaN and a 5
    pooled = tf.function(keras.layers.MaxPooling2D(2), jit_compile=jit_compile)(x).numpy()
    np.testing.assert_array_equal(pooled[0], np.full((2, 2, 1), value, F32))
    np.testing.assert_array_equal(pooled[1, ..., 0], [[5.0, 1.0], [1.0, 1.0]])
    assert np.isnan(keras.layers.GlobalMaxPooling2D()(x).numpy()).all()


@pytest.mark.parametrize("name", MAX_POOLED)
def test_keras_global_max_pooling_refuses_an_empty_batch(name, built_models):
    import tensorflow as tf

    message = (EMPTY_CONV_ERROR if conv_keeps_input_channels_on_an_empty_batch()
               else "Cannot compute the max of an empty tensor")
    with raises(tf.errors.InvalidArgumentError, message):
        built_models[name](np.zeros((0, *MODELS[name].input_shape), F32))


@pytest.mark.parametrize("name,kind", [(name, kind) for kind in ("int", "float64", "empty", "nan")
                                       for name in MODELS
                                       if not (kind == "empty" and name in MAX_POOLED)])
def test_models_take_mistaken_values_like_float32(name, kind, built_models):
    model, rng = built_models[name], np.random.default_rng(0)
    n = 0 if kind == "empty" else 3
    clean = _model_inputs(name, lambda shape: rng.integers(0, 3, (n, *shape)).astype(F32))
    spoiled = keras.tree.map_structure(
        lambda a: a.astype("int32" if kind == "int" else "float64" if kind == "float64" else F32),
        clean)
    if kind == "nan":
        first = keras.tree.flatten(spoiled)[0]
        first[0] = np.nan
    if kind == "empty" and has_conv(model) and conv_keeps_input_channels_on_an_empty_batch():
        import tensorflow as tf

        with raises(tf.errors.InvalidArgumentError, EMPTY_CONV_ERROR):
            model(spoiled, training=False)
        return
    got = keras.tree.flatten(model(spoiled, training=False))
    want = keras.tree.flatten(model(clean, training=False))
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape and a.shape[0] == n
        if kind == "nan":  # the spoiled sample is NaN (or, after a MaxPooling2D, far off)
            spoiled_out = keras.ops.convert_to_numpy(a)[0]
            if has_layer(model, keras.layers.MaxPooling2D):
                assert (~np.isfinite(spoiled_out)
                        | (np.abs(spoiled_out) > FAR_BEYOND_ANY_LOGIT)).all(), spoiled_out
            else:
                assert np.isnan(spoiled_out).all(), spoiled_out
            assert_allclose(a[1:], b[1:], atol=1e-5)  # the others are untouched
        else:
            assert_allclose(a, b, atol=1e-5)


IMAGE_AND_VECTOR_MODELS = [n for n, s in MODELS.items()
                           if n not in ("customer_ticket_model",) and not n.startswith("ticket")]


# Who refuses each wrong shape, and with which words: Keras's Sequential / Functional input check
# ("rank": a missing axis; "functional": a wrong size), the first layer's input spec ("input_spec"),
# or the package's own check in a subclassed model's `call` ("package", with the shape it expects).
def _refusal(who, shape, bad):
    got = (2, *bad)
    if who == "rank":
        return f"Expected shape {(None, *shape)}, but input has incompatible shape {got}"
    if who == "functional":
        return f"expected shape={(None, *shape)}, found shape={got}"
    if who == "input_spec":
        return (f"expected axis -1 of input shape to have value {shape[-1]}, "
                f"but received input with shape {got}")
    return f"expects inputs of shape {who}. Received: shape={got}"


REFUSED_BY = {  # name: (a missing axis, a wrong last size)
    "sequential_cnn": ("rank", "input_spec"),
    "functional_cnn": ("rank", "functional"),
    "subclassed_cnn": ("(batch, ?, ?, ?)", "input_spec"),
    "mini_inception": ("(batch, 32, 32, 3)", "(batch, 32, 32, 3)"),
    "inception_model": ("(batch, 28, 28, 1)", "(batch, 28, 28, 1)"),
    "mnist_mlp": ("rank", "functional"),
    "my_example_model": ("rank", "input_spec"),
    "residual_regressor": ("(batch, ?)", "input_spec"),
    "reconstruction_regressor": ("(batch, ?)", "input_spec"),
}


def test_every_image_and_vector_model_has_its_refusals_listed():
    assert sorted(REFUSED_BY) == sorted(IMAGE_AND_VECTOR_MODELS)


@pytest.mark.parametrize("name", IMAGE_AND_VECTOR_MODELS)
@pytest.mark.parametrize("mistake", ["rank", "last_dim"])
def test_models_name_the_shape_they_expect(name, mistake, built_models):
    model, shape = built_models[name], MODELS[name].input_shape
    bad = shape[:-1] if mistake == "rank" else (*shape[:-1], shape[-1] + 1)
    if mistake == "rank" and len(shape) == 1:
        bad = (shape[0], 2)  # a vector model given a matrix per sample
    with pytest.raises(ValueError) as error:
        model(np.ones((2, *bad), F32))
    who = REFUSED_BY[name][mistake == "last_dim"]
    # Both the expected and the received shape are named, whoever refuses.
    assert _refusal(who, shape, bad) in str(error.value), str(error.value)
