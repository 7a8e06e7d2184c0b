"""Test helpers shared by the test suite and usable by users' own tests."""


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


def run_layer_test(
    make,
    input_data,
    expected_output_shape,
    *,
    tmp_path=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=None,
    expected_num_params=None,
    train_target=None,
    loss="mse",
    run_training_step=True,
    mixed_precision=True,
    expected_float32_layers=None,
    skip=(),
):
    """Assert that a layer or model meets the specification's contract (`spec_impl.contract`).

    Runs every check of `spec_impl.contract.check_component` (construction, symbolic and eager
    calls, output shape and dtype, state made in `build`, weight counts, masking, config round
    trip, `.keras` reload here and in a fresh process, one training step, trace bound, eager /
    tf.function / XLA agreement, float64 / mixed_float16 / mixed_bfloat16 policies, finite
    differences, two replicas) and raises `AssertionError` naming each failed check with its
    cause and fix. A skipped check (no mask support, one device, a lambda factory for the fresh
    process) is not a failure.

    Args:
        make: a callable returning a fresh layer or model; when it takes `dtype=` (a layer
            class, or `lambda **kw: MyLayer(3, **kw)`), the dtype checks pass the policy that way,
            which tests that the object hands it on to the layers it creates.
        input_data: a NumPy array, or a list / dict of arrays for several inputs, of
            `spec_impl.contract.BATCH` (4) examples.
        expected_output_shape: the output shape(s) *without* the batch axis; a list of tuples
            for several outputs.
        tmp_path: unused (the contract writes into its own temporary folder); kept for callers.
        expected_num_trainable_weights, expected_num_non_trainable_weights, expected_num_params:
            the expected counts, or `None`.
        train_target, loss: the training step's targets (N(0, 1) values shaped like the outputs by
            default) and loss.
        run_training_step: `False` to leave out the training step.
        mixed_precision: `False` to leave out the dtype-policy checks (and the float64
            finite differences that need them).
        expected_float32_layers: how many layers compute in float32 under a mixed policy (a
            model's output layers, which the Keras guide keeps in float32); by default none for
            a layer and at most one per output for a model.
        skip: further check names to leave out, each with its reason at the call site.

    Returns:
        The contract's `Report`.
    """
    from spec_impl.contract import check_component, format_report

    expect = {"output_shape": expected_output_shape if isinstance(expected_output_shape, list)
              else tuple(expected_output_shape)}
    for key, value in (("trainable_weights", expected_num_trainable_weights),
                       ("non_trainable_weights", expected_num_non_trainable_weights),
                       ("params", expected_num_params),
                       ("float32_layers", expected_float32_layers)):
        if value is not None:
            expect[key] = value
    skip = list(skip)
    if not run_training_step:
        skip.append("training_step")
    if not mixed_precision:
        skip += ["dtype_policy", "finite_differences"]
    report = check_component(make, input_data, expect=expect, skip=tuple(skip),
                             train_target=train_target, loss=loss)
    assert report.ok, "the contract failed:\n" + format_report(report)
    return report


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

    from spec_impl.contract.component import as_list, takes_dtype
    from spec_impl.precision import global_policy
    from spec_impl.trainer import keras_api

    compute = keras.DTypePolicy(policy).compute_dtype
    if takes_dtype(make):
        obj = make(dtype=policy)
        outputs = obj(input_data)
    else:
        with global_policy(policy):
            obj = make()
            outputs = obj(input_data)
    label = f"{type(obj).__name__} under {policy}"
    specs = obj.compute_output_spec(_as_spec(input_data, compute))
    for tensor, spec in zip(as_list(outputs), as_list(specs), strict=True):
        got = keras.backend.standardize_dtype(tensor.dtype)
        assert got == spec.dtype, f"{label}: output dtype {got}, output spec says {spec.dtype}"
        want = "float32" if expected_float32_layers else compute
        assert got == want, f"{label}: output dtype {got}, expected {want}"
    for weight in obj.weights:
        dtype = keras.backend.standardize_dtype(weight.dtype)
        assert dtype == "float32", f"{label}: variable {weight.path} is {dtype}, not float32"
    inner = [layer for layer in [obj, *keras_api.all_layers(obj)]
             if not isinstance(layer, keras.layers.InputLayer)]
    in_float32 = [layer.name for layer in inner if layer.compute_dtype != compute]
    assert all(layer.compute_dtype in (compute, "float32") for layer in inner)
    assert len(in_float32) == expected_float32_layers, (
        f"{label}: layers computing in float32 instead of {compute}: {in_float32} "
        f"(expected {expected_float32_layers})")


def _as_spec(input_data, compute):
    import keras

    from spec_impl.contract.component import map_arrays

    def spec(a):
        dtype = keras.backend.standardize_dtype(np.asarray(a).dtype)
        return keras.KerasTensor(np.shape(a), compute if "float" in dtype else dtype)

    return map_arrays(spec, input_data)


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

    from spec_impl.precision import output_dtype

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
    for a, b in zip(got_weights, want_weights, strict=True):
        assert_allclose(a, b, atol=atol, rtol=rtol)
