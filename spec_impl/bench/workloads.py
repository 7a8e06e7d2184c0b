"""What the benchmarks time: a model, its loss and one batch of generated data.

A workload is one of the registry's five (`WORKLOADS`) or a user's own model
(`spec-impl bench --model MODULE:FUNCTION` or `--model FILE.keras`): its input shape is read
from the model (or given), its loss given or read from a compiled model, and labels are
generated to fit the loss (class ids, one-hot rows, 0 / 1 or normal values).
"""

import importlib
import os
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from spec_impl.bench.settings import DEFAULT_BATCH, USER_BATCH, WORKLOADS
from spec_impl.saving import load_model_checked
from spec_impl.trainer import is_sparse, untuned_options


@dataclass
class Workload:
    """A model, its loss and one batch, ready to time."""

    name: str
    model: keras.Model
    loss: object
    x: object
    y: object
    batch_size: int

    def dataset(self, steps):
        """The batch `steps` times as a `tf.data.Dataset` (no slicing: both loops read the
        same cheap pipeline, so the steps are what is timed)."""
        return (tf.data.Dataset.from_tensors((self.x, self.y)).repeat(steps)
                .with_options(untuned_options()))

    def element_spec(self):
        return self.dataset(1).element_spec


@dataclass(frozen=True)
class WorkloadSpec:
    """How to make a fresh `Workload` (each runner of `fit` needs its own model to compile).

    Args:
        name: a registry workload, `MODULE:FUNCTION` (an importable function returning a Keras
            model) or a path to a `.keras` file.
        batch_size: the batch size (default: the registry's, or 32).
        input_shape: the input shape without the batch axis, for a model that declares none.
        loss: the training loss, for a model that is not compiled with one.
    """

    name: str
    batch_size: int = None
    input_shape: tuple = None
    loss: object = None

    def build(self, seed=0):
        if self.name in WORKLOADS:
            return build_workload(self.name, self.batch_size, seed)
        return _user_workload(self, seed)


def parse_model(text):
    """Check a `--model` value: a registry name, `MODULE:FUNCTION` or an existing `.keras` file."""
    if text in WORKLOADS:
        return text
    if text.endswith(".keras"):
        if not os.path.isfile(text):
            raise ValueError(f"--model {text}: no such .keras file")
        return text
    module, _, function = text.partition(":")
    if not module or not function:
        raise ValueError(f"--model {text!r}: expected one of {', '.join(WORKLOADS)}, "
                         f"MODULE:FUNCTION or a .keras file")
    return text


def _load_user_model(name):
    """The user's model; whatever goes wrong in their file or code is one `ValueError` that
    names `--model` and their error."""
    if name.endswith(".keras"):
        try:
            return load_model_checked(name)
        except Exception as error:  # a truncated archive, an unregistered custom object, ...
            raise ValueError(f"--model {name}: cannot load it ({_said(error)})") from None
    module, _, function = name.partition(":")
    try:
        make = getattr(importlib.import_module(module), function)
    except Exception as error:  # not found, or the module raised while being imported
        raise ValueError(f"--model {name}: cannot import {function} from {module} "
                         f"({_said(error)})") from None
    try:
        model = make()
    except Exception as error:  # e.g. a function that needs arguments
        raise ValueError(f"--model {name}: {function}() raised {_said(error)}; expected a "
                         f"function that takes no arguments and returns a keras.Model") from None
    if not isinstance(model, keras.Model):
        raise ValueError(f"--model {name}: {function}() returned a {type(model).__name__}, "
                         f"expected a keras.Model")
    return model


def _said(error):
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def _inputs(model, input_shape, batch, rng, name):
    inputs = getattr(model, "inputs", None) or []
    if len(inputs) > 1:  # several named inputs: a dict, as `fit` takes them
        variable = [f"{i.name} {tuple(i.shape[1:])}" for i in inputs if None in i.shape[1:]]
        if variable:
            raise ValueError(f"--model {name}: the inputs {', '.join(variable)} have sizes the "
                             f"model leaves open (None); the bench times fixed shapes: give "
                             f"each keras.Input a complete shape")
        return {i.name: rng.random((batch, *i.shape[1:])) for i in inputs}
    shape = input_shape or (tuple(inputs[0].shape[1:]) if inputs else None)
    if shape is None or any(d is None for d in shape):
        raise ValueError(f"--model {name}: the model declares no complete input shape "
                         f"({shape}); pass --input-shape, e.g. --input-shape 28,28,1")
    return rng.random((batch, *shape))


def _user_workload(spec, seed):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = _load_user_model(spec.name)
    loss = spec.loss or getattr(model, "loss", None)
    if loss is None:
        raise ValueError(f"--model {spec.name}: the model is not compiled with a loss; "
                         f"pass --loss (a Keras loss name, e.g. --loss mse)")
    batch = spec.batch_size or USER_BATCH
    x = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32),
                              _inputs(model, spec.input_shape, batch, rng, spec.name))
    return Workload(spec.name, model, loss, x, _targets_for(model, x, loss, rng, batch), batch)


def build_workload(name, batch_size=None, seed=0):
    """A fresh `Workload` of the registry: the model built, its training loss, one batch of
    generated inputs (uniform in [0, 1)) and targets of the loss's kind."""
    from spec_impl.registry import get_model_spec

    if name not in WORKLOADS:
        raise ValueError(f"Unknown workload {name!r}. Expected one of {', '.join(WORKLOADS)}.")
    spec = get_model_spec(name)
    b = batch_size or DEFAULT_BATCH[name]
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = spec.build(spec.input_shape, spec.num_classes)
    x = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32),
                              _inputs(model, spec.input_shape, b, rng, name))
    loss = spec.training_loss()
    return Workload(name, model, loss, x, _targets_for(model, x, loss, rng, b), b)


def _targets_for(model, x, loss, rng, batch):
    outputs = tf.nest.flatten(model(x))
    losses = loss if isinstance(loss, (list, tuple)) else [loss] * len(outputs)
    targets = tuple(targets_for_loss(rng, fn, int(out.shape[-1]), batch)
                    for fn, out in zip(losses, outputs, strict=True))
    return targets[0] if len(targets) == 1 else targets


def targets_for_loss(rng, loss, width, batch):
    """Labels a loss takes: class ids (sparse), one-hot rows (categorical), 0 / 1 (binary) or
    normal values (anything else, a regression)."""
    if is_sparse(loss):
        return tf.constant(rng.integers(0, width, batch), tf.int64)
    name = loss if isinstance(loss, str) else getattr(loss, "name", None) or getattr(
        loss, "__name__", type(loss).__name__)
    name = str(name).lower()
    if "categorical" in name:
        return tf.one_hot(rng.integers(0, width, batch), width)
    if "binary" in name or "hinge" in name:
        return tf.constant(rng.integers(0, 2, (batch, width)), tf.float32)
    return tf.constant(rng.normal(size=(batch, width)), tf.float32)
