"""Test helpers shared by the test suite and usable by users' own tests."""

import inspect

import numpy as np

DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-6
MIXED_POLICIES = ("mixed_float16", "mixed_bfloat16")


def to_numpy(x):
    """A NumPy array from a tensor, a variable or an array-like."""
    return x.numpy() if hasattr(x, "numpy") else np.asarray(x)


def assert_allclose(actual, expected, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, err_msg=""):
    """Assert that two array-likes (tensors included) are equal within tolerance.

    The defaults are tight; a caller that loosens them states why at the call site.
    """
    np.testing.assert_allclose(
        to_numpy(actual), to_numpy(expected), atol=atol, rtol=rtol, err_msg=err_msg
    )


def _as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _symbolic_inputs(input_data):
    import keras

    if isinstance(input_data, dict):
        return {k: keras.Input(shape=np.shape(v)[1:], name=k) for k, v in input_data.items()}
    if isinstance(input_data, (list, tuple)):
        return [keras.Input(shape=np.shape(v)[1:]) for v in input_data]
    return keras.Input(shape=np.shape(input_data)[1:])


def _shapes(outputs):
    return [tuple(o.shape) for o in _as_list(outputs)]


def run_layer_test(
    make,
    input_data,
    expected_output_shape,
    *,
    tmp_path,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_params=None,
    train_target=None,
    loss="mse",
    run_training_step=True,
    mixed_precision=MIXED_POLICIES,
    expected_float32_layers=0,
):
    """The contract every layer and model of the package meets, as Keras's `run_layer_test`.

    Checks, in order: a symbolic call gives the expected output shape (batch axis `None`); an
    eager call gives it with the real batch size; the trainable / non-trainable weight counts (and
    parameter count); `get_config` -> `from_config` reproduces the config and, with copied weights,
    the outputs; a `.keras` save and reload (without `custom_objects`) predicts identically; one
    training step changes the trainable weights and gives a finite loss; and, as Keras's own
    `run_mixed_precision_check`, the object under each mixed policy (`check_mixed_precision`).

    Args:
        make: a callable returning a fresh layer or model. If it takes a `dtype` keyword (a
            layer class, or `lambda **kw: MyLayer(3, **kw)`), the mixed-precision check passes the
            policy as `dtype=`, which tests that the object hands it on to the layers it creates;
            otherwise (a Functional builder) it sets the global policy around `make()`.
        input_data: a NumPy array, or a list / dict of arrays for several inputs.
        expected_output_shape: the output shape(s) *without* the batch axis; a list of tuples
            for several outputs.
        tmp_path: a folder for the `.keras` file.
        expected_num_trainable_weights: number of trainable weight tensors, or `None`.
        expected_num_non_trainable_weights: number of non-trainable weight tensors, or `None`.
        expected_num_params: total parameter count, or `None`.
        train_target: targets for the training step (zeros shaped like the output by default).
        loss: the loss of the training step.
        run_training_step: `False` for objects without trainable weights.
        mixed_precision: the mixed policies to check (see `check_mixed_precision`); `()` for none.
        expected_float32_layers: how many layers compute in float32 under a mixed policy (the
            model's output layers, which the Keras guide keeps in float32).

    Returns:
        The eager outputs of the first object, for further assertions.
    """
    import keras

    expected = [tuple(s) for s in (expected_output_shape if isinstance(expected_output_shape, list)
                                   else [expected_output_shape])]
    batch = len(next(iter(input_data.values()))) if isinstance(input_data, dict) else len(
        _as_list(input_data)[0])

    # 1. Symbolic call.
    symbolic_in = _symbolic_inputs(input_data)
    obj = make()
    symbolic_out = obj(symbolic_in)
    assert _shapes(symbolic_out) == [(None, *s) for s in expected], (
        f"symbolic output shapes {_shapes(symbolic_out)} != {[(None, *s) for s in expected]}")

    # 2. Eager call.
    eager_out = obj(input_data)
    assert _shapes(eager_out) == [(batch, *s) for s in expected], (
        f"eager output shapes {_shapes(eager_out)} != {[(batch, *s) for s in expected]}")

    # 3. Weights.
    if expected_num_trainable_weights is not None:
        got = len(obj.trainable_weights)
        assert got == expected_num_trainable_weights, f"{got} trainable weights"
    if expected_num_non_trainable_weights is not None:
        got = len(obj.non_trainable_weights)
        assert got == expected_num_non_trainable_weights, f"{got} non-trainable weights"
    if expected_num_params is not None:
        got = obj.count_params()
        assert got == expected_num_params, f"{got} parameters"

    # 4. get_config -> from_config.
    config = obj.get_config()
    clone = type(obj).from_config(config)
    assert clone.get_config() == config
    clone(input_data)
    clone.set_weights(obj.get_weights())
    for a, b in zip(_as_list(obj(input_data, training=False)),
                    _as_list(clone(input_data, training=False))):
        assert_allclose(a, b)

    # 5. .keras round trip, without custom_objects.
    if isinstance(obj, keras.Model):
        model = obj
    else:
        model = keras.Model(symbolic_in, symbolic_out)
    path = str(tmp_path / f"{type(obj).__name__}.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)
    before = _as_list(model.predict(input_data, verbose=0))
    after = _as_list(reloaded.predict(input_data, verbose=0))
    for a, b in zip(before, after):
        assert_allclose(a, b)

    # 6. One training step.
    if run_training_step:
        if train_target is None:
            train_target = [np.zeros_like(to_numpy(o)) for o in _as_list(eager_out)]
            train_target = train_target[0] if len(train_target) == 1 else train_target
        start = [to_numpy(w).copy() for w in model.trainable_weights]
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=loss)
        history = model.fit(input_data, train_target, epochs=1, batch_size=batch, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        changed = [not np.array_equal(s, to_numpy(w)) for s, w in zip(start, model.trainable_weights)]
        assert any(changed), "one training step changed no trainable weight"

    # 7. Mixed precision.
    for policy in mixed_precision:
        check_mixed_precision(make, input_data, policy, expected_float32_layers)
    return eager_out



def _takes_dtype(make):
    try:
        parameters = inspect.signature(make).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "dtype" or p.kind is p.VAR_KEYWORD for p in parameters)


def check_mixed_precision(make, input_data, policy, expected_float32_layers=0):
    """The object made under `policy` keeps float32 variables and computes in the compute dtype.

    Asserts, as Keras's `run_mixed_precision_check` does, that each eager output has the dtype
    of `compute_output_spec` and every float variable is float32; and further, that exactly
    `expected_float32_layers` of the layers inside compute in float32 (the output layers) while
    every other one computes in the policy's compute dtype (a composite layer that does not
    pass its policy on fails here), and that the outputs are float32 if there are such output
    layers, else in the compute dtype.
    """
    import keras

    from spec_impl.trainer.precision import global_policy

    compute = keras.DTypePolicy(policy).compute_dtype
    if _takes_dtype(make):
        obj = make(dtype=policy)
        outputs = obj(input_data)
    else:
        with global_policy(policy):
            obj = make()
            outputs = obj(input_data)
    label = f"{type(obj).__name__} under {policy}"
    specs = obj.compute_output_spec(_as_spec(input_data, compute))
    for tensor, spec in zip(_as_list(outputs), _as_list(specs)):
        got = keras.backend.standardize_dtype(tensor.dtype)
        assert got == spec.dtype, f"{label}: output dtype {got}, output spec says {spec.dtype}"
        want = "float32" if expected_float32_layers else compute
        assert got == want, f"{label}: output dtype {got}, expected {want}"
    for weight in obj.weights:
        dtype = keras.backend.standardize_dtype(weight.dtype)
        assert dtype == "float32", f"{label}: variable {weight.path} is {dtype}, not float32"
    inner = [layer for layer in obj._flatten_layers(include_self=True, recursive=True)
             if not isinstance(layer, keras.layers.InputLayer)]
    in_float32 = [layer.name for layer in inner if layer.compute_dtype != compute]
    assert all(layer.compute_dtype in (compute, "float32") for layer in inner)
    assert len(in_float32) == expected_float32_layers, (
        f"{label}: layers computing in float32 instead of {compute}: {in_float32} "
        f"(expected {expected_float32_layers})")


def _as_spec(input_data, compute):
    import keras

    def spec(a):
        dtype = keras.backend.standardize_dtype(np.asarray(a).dtype)
        return keras.KerasTensor(np.shape(a), compute if "float" in dtype else dtype)

    if isinstance(input_data, dict):
        return {k: spec(v) for k, v in input_data.items()}
    if isinstance(input_data, (list, tuple)):
        return [spec(v) for v in input_data]
    return spec(input_data)


def read_scalars(folder):
    """`{tag: [(step, value), ...]}` of the float scalars in a TensorBoard event folder, read
    with TensorBoard's own event reader."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    scalars = {}
    for tag in acc.Tags()["tensors"]:
        events = acc.Tensors(tag)
        if tf.make_ndarray(events[0].tensor_proto).dtype.kind == "f":  # not the model config
            scalars[tag] = [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events]
    return scalars


def conv_keeps_input_channels_on_an_empty_batch():
    """Whether this machine's TensorFlow CPU `Conv2D` returns an empty batch with the *input's*
    channels instead of the filters'.

    It depends on which CPU kernel TensorFlow picks on the machine (both answers have been
    measured with TensorFlow 2.21), so it is probed. Where it does, Keras's bias add refuses the
    result (`Incompatible shapes: [0,...] vs. [1,1,1,filters]`), so a call on a batch of 0 fails.
    """
    import tensorflow as tf

    return tf.nn.conv2d(tf.zeros((0, 4, 4, 3)), tf.zeros((1, 1, 3, 8)), 1, "SAME").shape[-1] != 8


DIGITS_FEATURES = 64  # load_digits: 8 x 8 images, flattened
DIGITS_VALIDATION = 64  # the first samples of the test split that the tests validate on


def digits_arrays(n_train, n_val=DIGITS_VALIDATION):
    """The small fixed slices of the embedded digits that the training tests use.

    Returns:
        `(x, y, x_val, y_val)`: the first `n_train` training images, flat (64 features), their
        integer labels, and the first `n_val` of the test split.
    """
    from spec_impl.data import load_dataset

    (x, y), (x_val, y_val) = load_dataset("digits", input_shape=(DIGITS_FEATURES,))
    return x[:n_train], y[:n_train], x_val[:n_val], y_val[:n_val]


def digits_mlp(hidden=16, *, seed=0):
    """`Dense(hidden, relu) -> Dense(10, softmax)` on the 64 digit features: a deterministic
    classifier (no dropout) for comparing runs.

    Args:
        hidden: units of the hidden layer.
        seed: `keras.utils.set_random_seed(seed)` runs first, so the same seed gives the same
            weights; `None` leaves the random state alone.

    Under a mixed global policy the output layer computes in float32 (`output_dtype`).
    """
    import keras

    from spec_impl.trainer.precision import output_dtype

    if seed is not None:
        keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((DIGITS_FEATURES,)),
                             keras.layers.Dense(hidden, activation="relu"),
                             keras.layers.Dense(10, activation="softmax", dtype=output_dtype())])


def assert_same_training(got, want, *, names=None, atol=1e-6, rtol=0.0):
    """Assert that two training runs ended alike: the same history and the same weights.

    Args:
        got, want: `(history, weights)` of each run: `History.history` dicts and weight lists in
            the same order.
        names: `{want's history key: got's}` where the two name an entry differently (every key
            of `want` is compared; by default under the same name).
        atol, rtol: the tolerance; the defaults are float32 round-off for runs measured
            bit-identical.
    """
    (got_history, got_weights), (want_history, want_weights) = got, want
    names = names or {key: key for key in want_history}
    assert sorted(names) == sorted(want_history), (sorted(names), sorted(want_history))
    assert sorted(names.values()) == sorted(got_history), sorted(got_history)
    for key, got_key in names.items():
        assert_allclose(got_history[got_key], want_history[key], atol=atol, rtol=rtol, err_msg=key)
    assert len(got_weights) == len(want_weights)
    for a, b in zip(got_weights, want_weights):
        assert_allclose(a, b, atol=atol, rtol=rtol)
