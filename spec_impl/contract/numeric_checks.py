"""The contract's checks no Keras test makes: traces, compiled agreement, dtype policies,
finite-difference gradients and two replicas."""

import numpy as np

from spec_impl.contract import _private
from spec_impl.contract.component import as_list, generate, map_arrays
from spec_impl.contract.core import Failure, Skip, check, first_line
from spec_impl.contract.facts import GRAPH_MODELS
from spec_impl.contract.gradients import (
    FD32_STEPS,
    FD_PROBES,
    Coordinates,
    compare_gradients,
    fd_failure,
    fix_for,
    probe32,
    traced_graph,
)
from spec_impl.contract.layer_checks import LAYERS
from spec_impl.contract.saving_checks import assert_outputs_equal

NEW_BATCHES = 3  # calls on new data of the same shape after the first, which may trace
# eager, tf.function and XLA run the same float32 math with sums in another order (XLA fuses
# and reassociates): about n * 1.2e-7 relative for n-term sums, so 1e-5 of the largest output
# covers sums of ~80 terms at worst-case rounding and far more at typical rounding.
COMPILED_RTOL = 1e-5
MIXED = ("mixed_float16", "mixed_bfloat16")
def _new_batch(ctx, seed):
    """Inputs of the same shapes and dtypes as `ctx.inputs`, drawn anew."""
    def fresh(a):
        a = np.asarray(a)
        dtype = "string" if a.dtype.kind in "US" else a.dtype.name
        return generate([a.shape[1:]], [dtype], batch=a.shape[0], seed=seed)
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


def values_comparable(ctx):
    """Whether the component's values can be compared call to call: `False` for a component
    that draws from stateful random ops no seed generator resets (then only shapes are
    compared). Computed once."""
    from spec_impl.contract.seeds import calls_differ

    if "comparable" not in ctx.cache:
        ctx.cache["comparable"] = not calls_differ(_infer(ctx), ctx.obj, reset=True)
    return ctx.cache["comparable"]


def draws_at_inference(ctx):
    """Whether two inference calls in a row give other values (the component draws random
    numbers even with `training=False`, as the guides' VAE `Sampling` does). Computed once."""
    from spec_impl.contract.seeds import calls_differ

    if "draws" not in ctx.cache:
        ctx.cache["draws"] = calls_differ(_infer(ctx), ctx.obj, reset=False)
    return ctx.cache["draws"]


def _infer(ctx):
    """`obj -> obj(inputs)` in inference."""
    return lambda obj: ctx.call(obj, ctx.inputs, training=False)


def compare(ctx, got, want, what, rtol=0.0):
    """`assert_outputs_equal`, or shapes alone for a component whose draws cannot be reset."""
    if values_comparable(ctx):
        assert_outputs_equal(got, want, what, rtol)
        return
    compare_shapes(got, want, what)


def compare_shapes(got, want, what):
    got_shapes = [tuple(np.shape(t)) for t in as_list(got)]
    want_shapes = [tuple(np.shape(t)) for t in as_list(want)]
    if got_shapes != want_shapes:
        raise Failure(f"{what}: output shapes {got_shapes}, not {want_shapes}")


UNSEEDED = ("values compared by shape: the layer draws from stateful random ops at every call "
            "(give it a `keras.random.SeedGenerator` to have them compared)")


@check("eager_function_xla", kinds=LAYERS, needs=("eager_call",),
       why="the layer gives the same outputs eagerly, in a tf.function and compiled by XLA "
           "(the engine's modes); XLA is left out, as `fit` leaves it out, for a layer that "
           "declares `supports_jit = False`; a layer that draws random numbers draws the same "
           "ones from the same seed-generator states",
       fix="replace the op XLA cannot compile (tf.py_function, tf.numpy_function, string ops, "
           "outputs whose shape depends on values) or declare `supports_jit = False`, or make the "
           "layer give the same math in graphs")
def eager_function_xla(ctx):
    import tensorflow as tf

    obj = ctx.obj
    with ctx.same_draws(obj) as draw:
        eager = ctx.call(draw(obj), ctx.inputs, training=False)
        graph = tf.function(lambda x: ctx.call(obj, x, training=False))
        draw(obj)
        compare(ctx, graph(ctx.inputs), eager, "tf.function against eager", COMPILED_RTOL)
        if ctx.facts.no_jit:
            names = ", ".join(ctx.facts.no_jit)
            return (f"tf.function within {COMPILED_RTOL:g}; XLA left out: {names} declares "
                    f"`supports_jit = False`")
        try:
            xla = tf.function(lambda x: ctx.call(obj, x, training=False), jit_compile=True)
            draw(obj)
            got = xla(ctx.inputs)
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as error:
            raise Failure(f"XLA cannot compile the layer: {first_line(error)[:240]}") from error
        if not draws_at_inference(ctx):
            compare(ctx, got, eager, "XLA against eager", COMPILED_RTOL)
            return (f"within {COMPILED_RTOL:g} of the largest output"
                    + ("" if values_comparable(ctx) else f"; {UNSEEDED}"))
        # TensorFlow's stateless random ops choose their algorithm by device ("auto_select"),
        # so XLA draws other numbers from the same seeds: XLA is compared with itself.
        draw(obj)
        again = xla(ctx.inputs)
        compare(ctx, again, got, "XLA against XLA from the same seed-generator states")
        compare_shapes(got, eager, "XLA against eager")
    return (f"tf.function within {COMPILED_RTOL:g}; XLA draws its own numbers from the same "
            f"seeds (TensorFlow's stateless random ops choose their algorithm by device): the "
            f"same shapes, and the same values from the same states"
            + ("" if values_comparable(ctx) else f"; {UNSEEDED}"))


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
    # Layers that compute in no float dtype (lookups and hashing map ids to ids) take no part.
    layers = [layer for layer in _private.sublayers(obj)
              if not isinstance(layer, keras.layers.InputLayer)
              and (layer is obj or type(layer).__name__ not in GRAPH_MODELS)
              and "float" in keras.backend.standardize_dtype(layer.compute_dtype)]
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
    _computes_in_floats(ctx)
    allowed = ctx.expect.get("float32_layers", len(as_list(ctx.eager())) if ctx.kind == "model" else 0)
    checked, left_out = [], []
    for policy in ("float64", *MIXED):
        missing = unavailable(ctx, policy)
        if missing:
            left_out.append(f"{policy} left out: {missing}")
            continue
        fault = _policy_fault(ctx, policy, allowed)
        if fault:
            raise Failure(fault, _policy_fix(ctx))
        checked.append(policy)
    return "; ".join([", ".join(checked), *left_out])


def _policy_fix(ctx):
    """The fix for a policy fault, for the kind of component in front of it."""
    if ctx.facts.wrapper:
        return ("make the wrapped layer with the wrapper's policy (`Wrapper(Inner(..., "
                "dtype=policy), dtype=policy)`), or pass `dtype` on to it in your wrapper")
    if ctx.facts.graph_model:
        return ("make the model's layers under the policy (`keras.config.set_dtype_policy` "
                "before building it, or `dtype=` on each layer)")
    return None  # the check's own: sub-layers with `dtype=self.dtype_policy`


def _computes_in_floats(ctx):
    """Skip unless the component computes in a float dtype under the default policy (a lookup
    or hashing layer's dtype is that of the ids or strings it works on)."""
    import keras

    own = keras.backend.standardize_dtype(ctx.obj.compute_dtype)
    if "float" not in own:
        raise Skip(f"{type(ctx.obj).__name__} computes in {own} under the default policy (ids or "
                   f"strings), not in a float dtype")


def unavailable(ctx, policy):
    """Why the component cannot run under `policy` on this device when TensorFlow itself has
    no version of an op it runs for that dtype (3-D pooling in float64 or float16 on a CPU),
    else `None`. Computed once per policy."""
    key = f"unavailable {policy}"
    if key not in ctx.cache:
        reason = None
        try:
            obj, _ = ctx.make_under(policy)
            ctx.call(obj, _as_float64(ctx.inputs) if policy == "float64" else ctx.inputs,
                     training=False)
        except Exception as error:
            found = _private.lacks_kernel(error)
            if found is None:
                raise
            reason = f"TensorFlow has no version of an op it runs for this dtype here ({found})"
        ctx.cache[key] = reason
    return ctx.cache[key]


def _scalar_function(ctx, obj, draw, cast=True):
    """`s(inputs) = sum(output * R)` for fixed random `R`, in float64 (of float64 inputs, unless
    `cast` is False); every evaluation draws the same random numbers (`draw` resets the seed
    generators)."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    inputs = _as_float64(ctx.inputs) if cast else ctx.inputs
    outs = as_list(ctx.call(draw(obj), inputs, training=False))
    factors = [tf.constant(rng.standard_normal(o.shape), tf.float64) for o in outs]

    def value(inputs):
        outs = as_list(ctx.call(draw(obj), inputs, training=False))
        return tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64) * f)
                         for o, f in zip(outs, factors, strict=True)])
    return value


@check("finite_differences", kinds=LAYERS, needs=("dtype_policy",),
       why="in float64 the tape's gradients (inputs and weights) match central finite "
           "differences; a component that rounds to float32 inside (its estimates at the three "
           "steps disagree with each other) is compared at float32's steps and tolerance",
       fix="make the layer run in float64: compute in `self.compute_dtype` and create sub-layers "
           "with `dtype=self.dtype_policy`")
def finite_differences(ctx):
    _computes_in_floats(ctx)
    if not values_comparable(ctx):
        raise Skip("the layer draws from stateful random ops at every call: no fixed function "
                   "to differentiate")
    missing = unavailable(ctx, "float64")
    if missing:
        return _float32_differences(ctx, missing)
    obj, _ = ctx.make_under("float64")
    inputs = _as_float64(ctx.inputs)
    with ctx.same_draws(obj) as draw:
        value = _scalar_function(ctx, obj, draw)
        coords = Coordinates(inputs, obj.trainable_weights)
        if not coords.targets:
            raise Skip("neither float inputs nor trainable weights to differentiate")
        return compare_gradients(coords, value, "(sum(output * R))")


def _float32_differences(ctx, why):
    """Finite differences of the float32 component at float32's steps and tolerance, where
    float64 cannot run (`why`)."""
    obj = ctx.make()
    with ctx.same_draws(obj) as draw:
        value = _scalar_function(ctx, obj, draw, cast=False)
        coords = Coordinates(ctx.inputs, obj.trainable_weights)
        if not coords.targets:
            raise Skip("neither float inputs nor trainable weights to differentiate")
        grads = coords.gradients(value)
        rng = np.random.default_rng(11)
        for n in range(FD_PROBES):
            (name, target), grad = coords.targets[n % len(coords.targets)], grads[n % len(grads)]
            index = np.unravel_index(int(rng.integers(int(np.prod(coords.shape(target))))),
                                     coords.shape(target))
            again = probe32(coords, value, target, index, float(grad[index]))
            if again is not None:
                raise fd_failure(f"(sum(output * R)) / d {name}", index, float(grad[index]), again,
                                  FD32_STEPS, fix_for(traced_graph(value, coords.tensors())),
                                  f" (in float32: {why})")
    return f"{FD_PROBES} coordinates in float32 at steps {' / '.join(f'{s:g}' for s in FD32_STEPS)} ({why})"


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
