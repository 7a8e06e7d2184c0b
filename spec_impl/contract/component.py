"""The component under check: how it is made, what it is called on, how it is called."""

import importlib
import inspect
import os
import sys

import numpy as np

from spec_impl.contract.core import KINDS

BATCH = 4  # examples per generated batch: even, so that two replicas get two each
INT_HIGH = 10  # generated integer inputs lie in [0, INT_HIGH): ids for an Embedding(>= 10, ...)
SEED = 0


def takes_dtype(make):
    """Whether `make` accepts a `dtype=` keyword (a layer class, or `lambda **kw: X(3, **kw)`)."""
    try:
        parameters = inspect.signature(make).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "dtype" or p.kind is p.VAR_KEYWORD for p in parameters)


def load_target(target):
    """The callable named by `"module:attribute"` (an attribute path such as `mod:Class.make`).

    Raises:
        ValueError: `target` is not of that form, its module cannot be imported, or the
            attribute is missing or not callable; the message names which.
    """
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ValueError(f"Expected MODULE:FACTORY (for example my_layers:make_layer). "
                         f"Received: {target!r}")
    module_name, attribute = target.split(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` and pytest do: the current folder's modules
    try:
        obj = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(f"cannot import {module_name!r} (from {target!r}): "
                         f"{type(error).__name__}: {error}") from error
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attribute!r} (from {target!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{target!r} is a {type(obj).__name__}, not a function or class")
    return obj


def target_of(make):
    """`"module:qualname"` when `make` can be imported by name in another process, else `None`."""
    module, qualname = getattr(make, "__module__", None), getattr(make, "__qualname__", "")
    if not module or module == "__main__" or "<" in qualname or not qualname:
        return None
    try:
        found = load_target(f"{module}:{qualname}")
    except ValueError:
        return None
    return f"{module}:{qualname}" if found is make else None


def kind_of(obj):
    """`"model"`, `"layer"`, `"metric"`, `"loss"` or `None` for an object of none of those kinds."""
    import keras

    if isinstance(obj, keras.Model):
        return "model"
    if isinstance(obj, keras.metrics.Metric):
        return "metric"
    if isinstance(obj, keras.layers.Layer):
        return "layer"
    if isinstance(obj, keras.losses.Loss) or (callable(obj) and inspect.isfunction(obj)):
        return "loss"
    return None


def generate(shapes, dtypes=None, batch=BATCH, seed=SEED):
    """Arrays of `batch` examples for each per-example shape: floats from N(0, 1), integers in
    [0, INT_HIGH). One shape gives one array, several give a list."""
    rng = np.random.default_rng(seed)
    dtypes = list(dtypes or ["float32"] * len(shapes))
    if len(dtypes) == 1 and len(shapes) > 1:
        dtypes *= len(shapes)
    if len(dtypes) != len(shapes):
        raise ValueError(f"Expected one input dtype, or one per input shape ({len(shapes)}). "
                         f"Received: {dtypes}")
    arrays = []
    for shape, dtype in zip(shapes, dtypes, strict=True):
        full = (batch, *shape)
        if np.dtype(dtype).kind in "iu":
            arrays.append(rng.integers(0, INT_HIGH, size=full).astype(dtype))
        else:
            arrays.append(rng.standard_normal(full).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def map_arrays(fn, data):
    """`fn` applied to each array of an array, a list / tuple or a dict of arrays."""
    if isinstance(data, dict):
        return {k: fn(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [fn(v) for v in data]
    return fn(data)


def as_list(x):
    """The arrays (or tensors) of `x` as a flat list: a dict's values, a list's items, or `[x]`."""
    if isinstance(x, dict):
        return list(x.values())
    return list(x) if isinstance(x, (list, tuple)) else [x]


class Context:
    """What the checks of one component share: the factory, the inputs, the objects built."""

    def __init__(self, make, inputs, *, kind=None, target=None, expect=None, label=None,
                 train_target=None, loss="mse"):
        if kind is not None and kind not in KINDS:
            raise ValueError(f"Expected a kind among {', '.join(KINDS)}. Received: kind={kind!r}")
        self.make = make
        self.inputs = inputs
        self.target = target if target is not None else target_of(make)
        self.expect = dict(expect or {})
        self.label = label or self.target or getattr(make, "__qualname__", repr(make))
        self.train_target, self.loss = train_target, loss
        self.folder = None
        self.obj = None
        self._kind = kind
        self.cache = {}

    @property
    def kind(self):
        if self._kind is None:
            self.obj = self.make()
            self._kind = kind_of(self.obj)
            if self._kind is None:
                raise ValueError(f"{self.label} made a {type(self.obj).__name__}, not a Keras layer, "
                                 f"model, loss or metric; name the kind with kind=")
        return self._kind

    @property
    def batch(self):
        """The number of examples in the inputs."""
        return len(as_list(self.inputs)[0])

    def make_under(self, dtype):
        """A fresh object whose dtype policy is `dtype`: passed as `dtype=` when the factory
        takes it, else through the global policy while it is made. Returns `(obj, how)`."""
        from spec_impl.precision import global_policy

        if takes_dtype(self.make):
            return self.make(dtype=dtype), "dtype="
        with global_policy(dtype):
            return self.make(), "the global policy (the factory takes no dtype)"

    def call(self, obj, inputs, **kwargs):
        """Call `obj` on `inputs` as its `call` takes them: a dict of `call`'s own argument names
        as keywords, a list as positional arguments when `call` takes that many, else as one."""
        import keras

        if not isinstance(obj, keras.Model) and isinstance(inputs, (dict, list, tuple)):
            try:
                params = inspect.signature(obj.call).parameters
            except (TypeError, ValueError):
                params = {}
            if isinstance(inputs, dict) and set(inputs) <= set(params):
                return obj(**inputs, **kwargs)
            required = [p for p in params.values() if p.default is p.empty
                        and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
            if isinstance(inputs, (list, tuple)) and len(required) == len(inputs) > 1:
                return obj(*inputs, **kwargs)
        return obj(inputs, **kwargs)

    def symbolic_inputs(self):
        import keras

        def spec(a):
            return keras.Input(shape=np.shape(a)[1:], dtype=str(np.asarray(a).dtype))

        return map_arrays(spec, self.inputs)
