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
# Generated string inputs: words drawn from this vocabulary, WORDS_PER_STRING to a string.
WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog")
WORDS_PER_STRING = 3


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
    [0, INT_HIGH), strings of `WORDS_PER_STRING` words of `WORDS` (dtype `"string"`). One shape
    gives one array, several give a list."""
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
        if dtype in ("string", "str"):
            words = rng.choice(WORDS, size=(*full, WORDS_PER_STRING))
            arrays.append(np.array([" ".join(w) for w in words.reshape(-1, WORDS_PER_STRING)],
                                   dtype=object).reshape(full).astype(str))
        elif np.dtype(dtype).kind in "iu":
            arrays.append(rng.integers(0, INT_HIGH, size=full).astype(dtype))
        else:
            arrays.append(rng.standard_normal(full).astype(dtype))
    return arrays[0] if len(arrays) == 1 else arrays


def generate_targets(shape, target="probability", batch=BATCH, seed=SEED):
    """`(y_true, y_pred)` of `batch` examples of per-example `shape` for a loss or metric that
    expects targets of the kind `target` (`spec_impl.contract.facts.TARGETS`); `"values"` gives
    one array, for `update_state(values)`.

    Raises:
        ValueError: `shape` cannot hold targets of that kind (one class; a sequence's shape
            other than `(time, classes)`).
    """
    if target in ("categorical", "sparse", "classes", "sequence") and shape[-1] < 2:
        raise ValueError(f"{target} targets need at least 2 classes on the last axis; "
                         f"received the shape {tuple(shape)}")
    if target == "sequence" and len(shape) != 2:
        raise ValueError(f"sequence targets take a shape (time, classes); received {tuple(shape)}")
    rng = np.random.default_rng(seed)
    full = (batch, *shape)
    probabilities = (1 / (1 + np.exp(-rng.standard_normal(full)))).astype("float32")
    logits = rng.standard_normal(full)
    rows = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype("float32")  # sum to 1
    if target == "values":
        return (rng.standard_normal(full).astype("float32"),)
    if target == "sequence":
        steps, classes = shape
        return rng.integers(1, classes, size=(batch, steps // 2)).astype("int32"), rows
    if target == "regression":
        return rng.standard_normal(full).astype("float32"), rng.standard_normal(full).astype("float32")
    if target in ("categorical", "sparse", "classes"):
        classes = shape[-1]
        ids = rng.integers(0, classes, size=full[:-1])
        if target == "sparse":
            return ids.astype("int32"), rows
        if target == "classes":
            return ids.astype("int32"), rng.integers(0, classes, size=full[:-1]).astype("int32")
        return np.eye(classes, dtype="float32")[ids], rows
    if target == "binary":
        return rng.integers(0, 2, size=full).astype("float32"), probabilities
    return (np.abs(rng.standard_normal(full)) / 4).clip(0, 1).astype("float32"), probabilities


def loss_inputs(obj, shape, targets=None):
    """`(inputs, targets)` for the loss or metric `obj` on y_pred's per-example `shape`: the
    arrays `generate_targets` makes for `targets`, or for the kind `obj`'s name declares."""
    from spec_impl.contract.facts import target_kind

    targets = targets or target_kind(obj)
    return list(generate_targets(tuple(shape), targets)), targets


def model_inputs(obj):
    """`(shapes, dtypes)` of a model's own `keras.Input`s (without the batch axis).

    Raises:
        ValueError: `obj` has no inputs of its own, or they have open sizes.
    """
    found = getattr(obj, "inputs", None)
    if not found:
        raise ValueError("--input-shape is needed: the component has no inputs of its own")
    shapes = [tuple(t.shape[1:]) for t in found]
    if any(d is None for s in shapes for d in s):
        raise ValueError(f"--input-shape is needed: the model's inputs {shapes} have open sizes")
    return shapes, [str(t.dtype) for t in found]


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
                 train_target=None, loss="mse", targets=None):
        if kind is not None and kind not in KINDS:
            raise ValueError(f"Expected a kind among {', '.join(KINDS)}. Received: kind={kind!r}")
        self.make = make
        self.inputs = inputs
        self.target = target if target is not None else target_of(make)
        self.expect = dict(expect or {})
        self.label = label or self.target or getattr(make, "__qualname__", repr(make))
        self.train_target, self.loss = train_target, loss
        self.targets = targets
        self.folder = None
        self.obj = None
        self._kind = kind
        self._facts = None
        self.cache = {}
        self.deferred = None  # a list: fresh-process reloads are collected there, run later

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
    def facts(self):
        """What the component declares (`spec_impl.contract.facts.Facts`), read once."""
        from spec_impl.contract import facts

        if self._facts is None:
            obj = self.obj if self.obj is not None else self.make()
            self.obj = obj
            if self.kind in ("loss", "metric"):
                self._facts = facts.loss_metric_facts(obj, self.targets)
            else:
                self._facts = facts.layer_facts(obj, self.inputs)
        return self._facts

    @property
    def batch(self):
        """The number of examples in the inputs."""
        return len(as_list(self.inputs)[0])

    def make_under(self, dtype):
        """A fresh object whose dtype policy is `dtype`: passed as `dtype=` when the factory
        takes it, else through the global policy while it is made. Under float64 Keras's
        `floatx` is float64 too, so that a Functional or Sequential model's `keras.Input`s
        (float32 by default) are float64. Returns `(obj, how)`."""
        from spec_impl.precision import global_floatx, global_policy

        with global_floatx("float64" if dtype == "float64" else None):
            if takes_dtype(self.make):
                return self.make(dtype=dtype), "dtype="
            with global_policy(dtype):
                return self.make(), "the global policy (the factory takes no dtype)"

    def call(self, obj, inputs, **kwargs):
        """Call `obj` on `inputs` as its `call` takes them (`Facts.call_style`): a dict of
        `call`'s own argument names as keywords, a list as positional arguments, else as one."""
        style = self.facts.call_style
        if style == "keywords":
            return obj(**inputs, **kwargs)
        if style == "positional":
            return obj(*inputs, **kwargs)
        return obj(inputs, **kwargs)

    def symbolic_inputs(self):
        import keras

        def spec(a):
            dtype = np.asarray(a).dtype
            return keras.Input(shape=np.shape(a)[1:], dtype="string" if dtype.kind in "US" else str(dtype))

        return map_arrays(spec, self.inputs)

    def symbolic(self):
        """The outputs of the component's first call, on `keras.Input`s (which builds it);
        computed once, its error raised again to every check that reads it."""
        if "symbolic" not in self.cache:
            try:
                self.cache["symbolic"] = (self.call(self.obj, self.symbolic_inputs()), None)
            except Exception as error:
                self.cache["symbolic"] = (None, error)
        outputs, error = self.cache["symbolic"]
        if error is not None:
            raise error
        return outputs

    def eager(self):
        """The component's outputs on the inputs (inference), computed once after its build."""
        if "eager" not in self.cache:
            self.symbolic()
            with self.same_draws(self.obj):
                self.cache["eager"] = self.call(self.obj, self.inputs, training=False)
        return self.cache["eager"]

    def same_draws(self, *objs):
        """A context in which each of `objs` draws the random numbers the first draws at the
        start: their seed generators (and `keras.random`'s global one) are set to the first's
        states. A component without seed generators is unaffected."""
        from spec_impl.contract.seeds import same_draws

        return same_draws(*objs)
