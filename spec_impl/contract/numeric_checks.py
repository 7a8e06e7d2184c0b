"""The contract's checks no Keras test makes: traces, compiled agreement, dtype policies,
finite-difference gradients and two replicas."""

import numpy as np

from spec_impl.contract import _private
from spec_impl.contract.component import as_list, generate, map_arrays
from spec_impl.contract.core import Failure, Skip, check, first_line
from spec_impl.contract.layer_checks import LAYERS
from spec_impl.contract.saving_checks import assert_outputs_equal

NEW_BATCHES = 3  # calls on new data of the same shape after the first, which may trace
# eager, tf.function and XLA run the same float32 math with sums in another order (XLA fuses
# and reassociates): about n * 1.2e-7 relative for n-term sums, so 1e-5 of the largest output
# covers sums of ~80 terms at worst-case rounding and far more at typical rounding.
COMPILED_RTOL = 1e-5
MIXED = ("mixed_float16", "mixed_bfloat16")
GRAPH_MODELS = ("Functional", "Sequential")
# Central differences in float64 err by ~ step**2 * f''' plus the rounding of the two values,
# ~ ROUNDOFF * |s| / step. A ReLU or max-pool that switches within the step spoils an estimate
# (in a network of 1e5 units, about one probe in ten at 1e-6); a smaller step makes that ten
# times rarer each, while a wrong gradient (a factor or a term off) fails at every step.
FD_STEPS = (1e-6, 1e-7, 1e-8)
FD_RTOL, FD_ATOL = 1e-5, 1e-7  # far above those errors, far below a wrong gradient's
ROUNDOFF = 1e-15  # float64's 2.2e-16 times a few roundings in the sum of the outputs
FD_PROBES = 12  # coordinates probed (spread over the inputs and weights); each costs two calls or more


def _agrees(tape_value, estimate, size, step):
    """Whether a tape's derivative matches a central difference of a function of magnitude
    `size` at `step`."""
    bound = FD_ATOL + FD_RTOL * abs(estimate) + ROUNDOFF * size / step
    return abs(estimate - tape_value) <= bound


def _central_difference(value, rebuild, var, index, step):
    """`(s(x + step e_i) - s(x - step e_i)) / (2 step)` for the coordinate `index` of `var`,
    and the magnitude of `s`."""
    original = var.numpy()
    bumped = []
    for sign in (1, -1):
        moved = original.copy()
        moved[index] += sign * step
        var.assign(moved)
        bumped.append(float(value(rebuild())))
    var.assign(original)
    return (bumped[0] - bumped[1]) / (2 * step), max(1.0, abs(bumped[0]))


def _matches_at_some_step(tape_value, value, rebuild, var, index):
    """`(True, estimates)` when the tape's derivative matches central differences at one of
    `FD_STEPS` (tried in order), else `(False, estimates)`."""
    estimates = []
    for step in FD_STEPS:
        estimate, size = _central_difference(value, rebuild, var, index, step)
        estimates.append(estimate)
        if _agrees(tape_value, estimate, size, step):
            return True, estimates
    return False, estimates


def _fd_failure(what, index, tape_value, estimates):
    steps = " / ".join(f"{s:g}" for s in FD_STEPS)
    found = " / ".join(f"{e:.6g}" for e in estimates)
    return Failure(f"d {what}{[int(i) for i in index]} is {tape_value:.6g} by the tape and {found} by "
                   f"central differences (float64, steps {steps})")


def _new_batch(ctx, seed):
    """Inputs of the same shapes and dtypes as `ctx.inputs`, drawn anew."""
    def fresh(a):
        a = np.asarray(a)
        return generate([a.shape[1:]], [a.dtype.name], batch=a.shape[0], seed=seed)
    return map_arrays(fresh, ctx.inputs)


@check("trace_bound", kinds=LAYERS, needs=("eager_call",),
       why="after its first call, calling the layer (eager or in a tf.function) on new batches "
           "of the same shape traces no new graph; a retrace per call costs a compilation",
       fix="keep values that change between calls in tensors or variables, not in Python "
           "numbers or attributes that reach a `tf.function`")
def trace_bound(ctx):
    import tensorflow as tf

    obj = ctx.obj
    compiled = tf.function(lambda x: ctx.call(obj, x, training=False))
    for how, fn in (("eager", lambda x: ctx.call(obj, x, training=False)), ("tf.function", compiled)):
        fn(_new_batch(ctx, 100))
        with _private.count_traces() as traces:
            for seed in range(NEW_BATCHES):
                fn(_new_batch(ctx, 101 + seed))
        if traces[0]:
            raise Failure(f"{how} calls on {NEW_BATCHES} new batches of the same shape traced "
                          f"{traces[0]} new graph(s)")
    return f"0 traces on {NEW_BATCHES} new batches"


@check("eager_function_xla", kinds=LAYERS, needs=("eager_call",),
       why="the layer gives the same outputs eagerly, in a tf.function and compiled by XLA "
           "(the engine's modes)",
       fix="replace the op XLA cannot compile (tf.py_function, tf.numpy_function, string ops, "
           "outputs whose shape depends on values) or make the layer give the same math in graphs")
def eager_function_xla(ctx):
    import tensorflow as tf

    obj = ctx.obj
    eager = ctx.call(obj, ctx.inputs, training=False)
    graph = tf.function(lambda x: ctx.call(obj, x, training=False))(ctx.inputs)
    assert_outputs_equal(graph, eager, "tf.function against eager", COMPILED_RTOL)
    try:
        xla = tf.function(lambda x: ctx.call(obj, x, training=False), jit_compile=True)(ctx.inputs)
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
        raise Failure(f"XLA cannot compile the layer: {first_line(error)[:240]}") from error
    assert_outputs_equal(xla, eager, "XLA against eager", COMPILED_RTOL)
    return f"within {COMPILED_RTOL:g} of the largest output"


def _policy_fault(ctx, policy, allowed_float32):
    """The first way the object made under `policy` fails to compute in its compute dtype."""
    import keras

    obj, how = ctx.make_under(policy)
    compute = keras.DTypePolicy(policy).compute_dtype
    variable = keras.DTypePolicy(policy).variable_dtype
    outputs = ctx.call(obj, ctx.inputs if policy != "float64" else _as_float64(ctx.inputs),
                       training=False)
    label = f"made with {policy!r} through {how}"
    # An Input layer computes nothing; a Functional or Sequential sub-model takes no policy of its
    # own (its layers are checked one by one).
    layers = [layer for layer in _private.sublayers(obj)
              if not isinstance(layer, keras.layers.InputLayer)
              and (layer is obj or type(layer).__name__ not in GRAPH_MODELS)]
    if compute == variable:
        allowed_float32 = 0  # float64: the output layers too
    off = [layer.name for layer in layers if layer.compute_dtype != compute]
    if len(off) > allowed_float32 or any(layer.compute_dtype not in (compute, "float32") for layer in layers):
        first = [layer for layer in layers if layer.compute_dtype != compute][0]
        return (f"{label}, the sub-layer `{first.name}` computes in {first.compute_dtype}, not "
                f"{compute}: a layer does not pass its dtype policy on")
    for weight in obj.weights:
        dtype = keras.backend.standardize_dtype(weight.dtype)
        if "float" in dtype and dtype != variable:
            return f"{label}, the variable {weight.path} is {dtype}, not {variable}"
    for i, tensor in enumerate(as_list(outputs)):
        got = keras.backend.standardize_dtype(tensor.dtype)
        if "float" in got and got not in (compute, "float32" if allowed_float32 else compute):
            return f"{label}, output {i} is {got}, not {compute}"
    return None


def _as_float64(inputs):
    return map_arrays(lambda a: np.asarray(a, "float64") if np.asarray(a).dtype.kind == "f" else a,
                      inputs)


@check("dtype_policy", kinds=LAYERS, needs=("output_dtype",),
       why="made under float64, mixed_float16 or mixed_bfloat16, the layer and every sub-layer "
           "compute in that policy's dtype with variables in its variable dtype",
       fix="create every sub-layer with `dtype=self.dtype_policy` and pass `**kwargs` (with "
           "`dtype`) on to `super().__init__`")
def dtype_policy(ctx):
    allowed = ctx.expect.get("float32_layers", len(as_list(ctx.cache["eager"])) if ctx.kind == "model" else 0)
    for policy in ("float64", *MIXED):
        fault = _policy_fault(ctx, policy, allowed)
        if fault:
            raise Failure(fault)
    return ", ".join(("float64", *MIXED))


def _scalar_function(ctx, obj):
    """`s(inputs) = sum(output * R)` for fixed random `R`, in float64."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    outs = as_list(ctx.call(obj, _as_float64(ctx.inputs), training=False))
    factors = [tf.constant(rng.standard_normal(o.shape), tf.float64) for o in outs]

    def value(inputs):
        outs = as_list(ctx.call(obj, inputs, training=False))
        return tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64) * f)
                         for o, f in zip(outs, factors, strict=True)])
    return value


@check("finite_differences", kinds=LAYERS, needs=("dtype_policy",),
       why="in float64 the tape's gradients (inputs and weights) match central finite differences",
       fix="check each `tf.custom_gradient` and `tf.stop_gradient` in `call`")
def finite_differences(ctx):
    import tensorflow as tf

    obj, _ = ctx.make_under("float64")
    inputs = _as_float64(ctx.inputs)
    ctx.call(obj, inputs, training=False)
    value = _scalar_function(ctx, obj)
    float_inputs = [i for i, a in enumerate(as_list(inputs)) if np.asarray(a).dtype.kind == "f"]
    tensors = [tf.Variable(np.asarray(a)) for a in as_list(inputs)]

    def rebuild():
        if isinstance(inputs, dict):
            return dict(zip(inputs, tensors, strict=True))
        return tensors if isinstance(inputs, (list, tuple)) else tensors[0]

    targets = [(f"input {i}", tensors[i]) for i in float_inputs]
    targets += [(w.path, w) for w in obj.trainable_weights]
    if not targets:
        raise Skip("neither float inputs nor trainable weights to differentiate")
    with tf.GradientTape() as tape:
        s = value(rebuild())
    grads = tape.gradient(s, [t for _, t in targets])
    rng = np.random.default_rng(11)
    probes = 0
    for n in range(FD_PROBES):
        (name, var), grad = targets[n % len(targets)], grads[n % len(targets)]
        size = int(np.prod(var.shape))
        if not size:
            continue
        index = np.unravel_index(int(rng.integers(size)), var.shape)
        tape_value = 0.0 if grad is None else float(tf.convert_to_tensor(grad).numpy()[index])
        matched, estimates = _matches_at_some_step(tape_value, value, rebuild, var, index)
        probes += 1
        if not matched:
            raise _fd_failure(f"(sum(output * R)) / d {name}", index, tape_value, estimates)
    return f"{probes} coordinates"


def _two_devices():
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) >= 2:
        return [d.name for d in gpus[:2]]
    cpus = tf.config.list_logical_devices("CPU")
    if len(cpus) >= 2:
        return [d.name for d in cpus[:2]]
    return None


@check("mirrored", kinds=LAYERS, needs=("eager_call",),
       why="under a two-replica MirroredStrategy each replica's outputs and the summed gradients "
           "equal one device's on the whole batch",
       fix="compute each example's output from that example alone in inference, or combine "
           "replicas with `tf.distribute.get_replica_context().all_reduce`")
def mirrored(ctx):
    import tensorflow as tf

    devices = _two_devices()
    if ctx.batch % 2:
        raise Skip(f"{ctx.batch} examples cannot be split evenly over two replicas")
    if devices is None:
        raise Skip("one device: `spec-impl check` splits the CPU in two itself; under pytest pass "
                   "--spec-impl-cpu-devices=2")
    strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    with strategy.scope():
        replica_obj = ctx.make()
        ctx.call(replica_obj, ctx.inputs, training=False)
    replica_obj.set_weights(ctx.obj.get_weights())
    rng = np.random.default_rng(5)
    factors = [rng.standard_normal(np.shape(o)).astype("float32")
               for o in as_list(ctx.call(ctx.obj, ctx.inputs, training=False))]
    half = ctx.batch // 2

    def shard(data, r):
        return map_arrays(lambda a: np.asarray(a)[r * half:(r + 1) * half], data)

    def step(obj, inputs, weights):
        with tf.GradientTape() as tape:
            outs = as_list(ctx.call(obj, inputs, training=False))
            s = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32) * f)
                          for o, f in zip(outs, weights, strict=True)])
        grads = tape.gradient(s, obj.trainable_weights)
        # An Embedding's gradient is IndexedSlices; compared as dense tensors.
        return outs, [None if g is None else tf.convert_to_tensor(g) for g in grads]

    want_outs, want_grads = step(ctx.obj, ctx.inputs, factors)
    values = strategy.experimental_distribute_values_from_function(
        lambda c: (shard(ctx.inputs, c.replica_id_in_sync_group),
                   [f[c.replica_id_in_sync_group * half:(c.replica_id_in_sync_group + 1) * half]
                    for f in factors]))
    outs, grads = strategy.run(lambda v: step(replica_obj, v[0], v[1]), args=(values,))
    got = [np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(o)]) for o in outs]
    assert_outputs_equal(got, want_outs, "two replicas against one device", COMPILED_RTOL)
    summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads if g is not None]
    assert_outputs_equal(summed, [g for g in want_grads if g is not None],
                         "the gradients summed over two replicas against one device's", COMPILED_RTOL)
    return f"{len(devices)} replicas on {', '.join(d.split('/')[-1] for d in devices)}"
