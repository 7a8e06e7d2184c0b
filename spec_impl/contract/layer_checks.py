"""The contract's checks of a layer or model: construction, calls, state, counts, masks."""

import warnings

import numpy as np

from spec_impl.contract import _private
from spec_impl.contract.component import as_list
from spec_impl.contract.core import Failure, Skip, check

LAYERS = ("layer", "model")
STATE_LOCKED = "cannot add new elements of state"  # Keras's error for state made after build


def _shape_text(shapes):
    return ", ".join(str(tuple(s)) for s in shapes)


@check("construct", kinds=LAYERS + ("loss", "metric"),
       why="the factory runs without arguments and makes the kind of object asked for",
       fix="make the factory callable without arguments (give every argument a default)")
def construct(ctx):
    from spec_impl.contract.component import kind_of

    obj = ctx.obj if ctx.obj is not None else ctx.make()
    ctx.obj = obj
    found = kind_of(obj)
    if found != ctx.kind and not (ctx.kind == "layer" and found == "model"):
        raise Failure(f"the factory made a {type(obj).__name__} ({found or 'not a Keras object'}), "
                      f"not a {ctx.kind}", "return the component from the factory, or pass --kind")
    return type(obj).__name__


@check("built_at_construction", kinds=("layer",), needs=("construct",),
       why="a layer without state is built when constructed (Keras builds a layer that does not "
           "override `build` by its first call at the latest); one that overrides `build` to make "
           "no state stays unbuilt for nothing",
       fix="leave `build` out of a layer without weights (compute shape-derived values in "
           "`call`), or set `self.built = True` in `__init__`")
def built_at_construction(ctx):
    import keras

    obj = ctx.make()
    if obj.built:
        return "built"
    if type(obj).build is keras.layers.Layer.build:
        return "built by Keras at its first call (it does not override `build`)"
    probe = ctx.make()
    ctx.call(probe, ctx.inputs)
    if probe.weights or _private.seed_generators(probe):
        raise Skip("the layer has state, made in its `build`")
    raise Failure(f"{type(obj).__name__} has no state but is not built after construction: "
                  f"its `build` is overridden and makes no state")


def _weights_after_build(ctx):
    """The number of weights `build(input_shape)` alone makes, or `None` where the layer takes
    several inputs (whose `build` arguments differ from layer to layer)."""
    import keras

    if isinstance(ctx.inputs, (list, tuple, dict)) or isinstance(ctx.obj, keras.Model):
        return None
    probe = ctx.make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns of a composite layer without `build`
        probe.build(np.shape(ctx.inputs))
    return len(probe.weights)


@check("state_in_build", kinds=LAYERS, needs=("construct",),
       why="every weight, sub-layer and seed generator exists once the layer is built; state "
           "made in `call` is refused by Keras, or escapes tracking and tf.function",
       fix="create weights with `self.add_weight` in `build(input_shape)` and sub-layers in `__init__`")
def state_in_build(ctx):
    import tensorflow as tf

    obj = ctx.obj
    try:
        symbolic = ctx.call(obj, ctx.symbolic_inputs())
    except ValueError as error:
        if STATE_LOCKED in str(error):
            raise Failure(f"`{type(obj).__name__}.call` creates state after the layer is built "
                          f"(Keras: \"You {STATE_LOCKED}\")") from error
        raise
    ctx.cache["symbolic"] = symbolic
    weights, seeds = len(obj.weights), len(_private.seed_generators(obj))
    built = _weights_after_build(ctx)
    if built is not None and built < weights:
        raise Failure(f"`build(input_shape)` makes {built} of the {weights} weights; the others "
                      f"appear only at the first call, so weights loaded before a call miss them",
                      "build every sub-layer in `build` (`self.inner.build(input_shape)`)")
    created = []

    def creator(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        ctx.call(obj, ctx.inputs, training=False)
        ctx.call(obj, ctx.inputs, training=False)
    after = (len(obj.weights), len(_private.seed_generators(obj)))
    if created or after != (weights, seeds):
        raise Failure(f"calls after the build created {len(created)} variable(s) {created} "
                      f"(weights {weights} -> {after[0]}, seed generators {seeds} -> {after[1]})")
    return f"{weights} weights, {seeds} seed generators after the build"


@check("symbolic_call", kinds=LAYERS, needs=("state_in_build",),
       why="a call on `keras.Input` gives outputs of the expected shape with an open batch axis",
       fix="make `compute_output_shape` (or `compute_output_spec`) agree with `call`")
def symbolic_call(ctx):
    shapes = [tuple(o.shape) for o in as_list(ctx.cache["symbolic"])]
    if any(s[:1] != (None,) for s in shapes):
        raise Failure(f"symbolic output shapes {_shape_text(shapes)} do not keep the open batch axis")
    want = ctx.expect.get("output_shape")
    if want is not None:
        want = [tuple(want)] if not isinstance(want, list) else [tuple(w) for w in want]
        if shapes != [(None, *w) for w in want]:
            raise Failure(f"symbolic output shapes {_shape_text(shapes)}, expected "
                          f"{_shape_text((None, *w) for w in want)}")
    return _shape_text(shapes)


@check("eager_call", kinds=LAYERS, needs=("symbolic_call",),
       why="a call on real data gives the symbolic call's shapes with the real batch size",
       fix="make `compute_output_shape` (or `compute_output_spec`) agree with `call`")
def eager_call(ctx):
    out = ctx.call(ctx.obj, ctx.inputs, training=False)
    ctx.cache["eager"] = out
    shapes = [tuple(o.shape) for o in as_list(out)]
    want = [(ctx.batch, *tuple(o.shape)[1:]) for o in as_list(ctx.cache["symbolic"])]
    if shapes != want:
        raise Failure(f"eager output shapes {_shape_text(shapes)} differ from the symbolic call's "
                      f"{_shape_text(want)}")
    return _shape_text(shapes)


@check("output_dtype", kinds=LAYERS, needs=("eager_call",),
       why="under the default policy float outputs have the layer's compute dtype (float32)",
       fix="compute in `self.compute_dtype` (cast with `keras.ops.cast(x, self.compute_dtype)`)")
def output_dtype(ctx):
    import keras

    want = ctx.obj.compute_dtype
    for i, tensor in enumerate(as_list(ctx.cache["eager"])):
        got = keras.backend.standardize_dtype(tensor.dtype)
        if "float" in got and got != want:
            raise Failure(f"output {i} is {got} under the default policy; the layer's compute "
                          f"dtype is {want}")
    return want


COUNT_LABELS = {"trainable_weights": "trainable weights", "non_trainable_weights": "non-trainable weights",
                "params": "parameters", "seed_generators": "seed generators", "losses": "losses"}


@check("weight_counts", kinds=LAYERS, needs=("eager_call",),
       why="the numbers of trainable and non-trainable weights, parameters, seed generators and "
           "added losses are the expected ones (given with --expect / expect=)",
       fix="compare the layer's `build` and `add_loss` calls with what you expected")
def weight_counts(ctx):
    obj = ctx.obj
    found = {"trainable_weights": len(obj.trainable_weights),
             "non_trainable_weights": len(obj.non_trainable_weights),
             "params": obj.count_params(),
             "seed_generators": len(_private.seed_generators(obj)),
             "losses": len(obj.losses)}
    for key, want in ctx.expect.items():
        if key in found and found[key] != want:
            raise Failure(f"{found[key]} {COUNT_LABELS[key]}, expected {want}")
    return ", ".join(f"{v} {COUNT_LABELS[k]}" for k, v in found.items())


def _mask_for(array):
    """A boolean mask over the first one or two axes of `array`, its last step masked."""
    shape = np.shape(array)[:2] if np.ndim(array) >= 3 else np.shape(array)[:1]
    mask = np.ones(shape, bool)
    mask[..., -1] = False
    return mask


@check("masking", kinds=LAYERS, needs=("eager_call",),
       why="a layer that supports masking hands a mask on, shaped to fit its output; a layer "
           "that makes a mask (Embedding(mask_zero=True)) attaches it",
       fix="leave `compute_mask` to Keras (it passes the mask on when `supports_masking` is "
           "True), or return a mask shaped like the output's leading axes from it")
def masking(ctx):
    import tensorflow as tf

    obj = ctx.obj
    inputs = ctx.inputs
    first = inputs if not isinstance(inputs, (list, tuple, dict)) else (
        list(inputs.values())[0] if isinstance(inputs, dict) else inputs[0])
    made = _private.get_mask(as_list(ctx.call(obj, inputs, training=False))[0])
    if not obj.supports_masking and made is None:
        raise Skip("the layer neither supports masking nor makes a mask")
    mask = None
    if made is None:
        mask = _mask_for(first)
        tensor = tf.convert_to_tensor(first)
        _private.set_mask(tensor, tf.constant(mask))
        if isinstance(inputs, dict):
            inputs = {**inputs, next(iter(inputs)): tensor}
        elif isinstance(inputs, (list, tuple)):
            inputs = [tensor, *inputs[1:]]
        else:
            inputs = tensor
    out = as_list(ctx.call(obj, inputs, training=False))[0]
    got = _private.get_mask(out)
    if got is None:
        raise Failure(f"{type(obj).__name__} claims `supports_masking` but its output carries no "
                      f"mask: the mask is dropped")
    shape = tuple(got.shape)
    if tuple(out.shape)[:len(shape)] != shape:
        raise Failure(f"the output mask {shape} does not fit the output {tuple(out.shape)}")
    if mask is not None and shape == mask.shape and not np.array_equal(np.asarray(got), mask):
        raise Failure("the output mask differs from the input mask of the same shape")
    return f"mask {shape} {'made' if mask is None else 'handed on'}"
