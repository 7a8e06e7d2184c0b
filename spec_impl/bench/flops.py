"""FLOPs of a training step: counted on the traced step (`step_flops`) and, for the dense and
convolution layers, analytically from the layers' shapes (`analytic_flops`), the cross-check of
the first.

TensorFlow's profiler counts a convolution's two gradients (`Conv2DBackpropInput`,
`Conv2DBackpropFilter`) over the positions of the convolution's *input* image, divided by the
stride: for a `"valid"` or strided convolution on a small image that is more than the
products computed, which are one per position of its *output* (the sequential CNN's step: 2.2x
its analytic count). `step_flops` takes the profiler's total and counts those two gradients
from the gradient's own shape. It also leaves out what the graph holds but never runs: the
gradient of the model's input, which `GradientTape` builds for the first layer and nothing
reads.
"""

import math

import keras
import tensorflow as tf

# Ops whose FLOPs are products of a dense or convolution layer (forward and both gradients).
PRODUCT_OPS = frozenset({"MatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D",
                         "Conv2DBackpropInput", "Conv2DBackpropFilter"})
CONV_GRADIENTS = ("Conv2DBackpropInput", "Conv2DBackpropFilter")


def _registered(graph, op):
    """The profiler's FLOPs of `op` (its registered statistic), 0 where none is registered."""
    from tensorflow.python.framework import ops

    try:
        return ops.get_stats_for_node_def(graph, op.node_def, "flops").value or 0
    except (ValueError, TypeError, KeyError):
        return 0


def _conv_gradient_flops(op):
    """Two FLOPs per product of a convolution gradient: one product of the filter's
    `kh * kw * c_in` per element of the output's gradient (its third input)."""
    kernel = op.inputs[1].shape if op.type == "Conv2DBackpropInput" else op.outputs[0].shape
    return 2 * op.inputs[2].shape.num_elements() * math.prod(kernel[:3])


def _unread(op):
    """Whether nothing in the graph reads any output of `op` (pruned before it runs)."""
    return all(not output.consumers() for output in op.outputs)


def count_graph(graph):
    """`(total, products)`: the FLOPs of the traced `graph` (the profiler's, with the
    convolution gradients counted from their own shapes and the unread ops left out), and
    their part in `PRODUCT_OPS`."""
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder
    from tensorflow.python.util import deprecation

    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    with deprecation.silence():  # the TF1 profiler warns of its own TF1 helpers
        total = int(profile(graph, options=options).total_float_ops)
        products = 0
        for op in graph.get_operations():
            if op.type not in PRODUCT_OPS:
                continue
            registered = _registered(graph, op)
            exact = 0 if _unread(op) else (
                _conv_gradient_flops(op) if op.type in CONV_GRADIENTS else registered)
            total += exact - registered
            products += exact
    return int(total), int(products)


def step_flops(trainer, workload):
    """FLOPs of one training step (`count_graph` on a fixed-shape trace), or `None` where the
    profiler cannot count the model's step."""
    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                  (workload.x, workload.y))
    try:
        graph = tf.function(trainer.train_step).get_concrete_function(specs).graph
        return count_graph(graph)[0] or None
    except (ValueError, TypeError, tf.errors.OpError):
        return None


def _forward_products(layer, inputs, outputs):
    """Multiply-adds of one forward call of a `Dense` or convolution layer."""
    kernel = layer.kernel.shape
    if isinstance(layer, keras.layers.Dense):
        return math.prod(outputs.shape) * kernel[0]
    return math.prod(outputs.shape) * math.prod(kernel[:-1])  # (kh, kw, c_in / groups, c_out)


def analytic_flops(model, x):
    """FLOPs of one training step's `Dense` and `Conv1D`/`Conv2D` layers on the batch `x`, from
    their shapes: 2 per multiply-add, in the forward pass, in the kernel's gradient, and in the
    input's gradient, except for a layer with nothing to train before it (it reads one of the
    model's inputs, or runs before any other such layer). Each layer's shapes are recorded in
    one forward call on `x`."""
    layers = [layer for layer in model._flatten_layers(include_self=False, recursive=True)
              if isinstance(layer, keras.layers.Dense | keras.layers.Conv1D | keras.layers.Conv2D)]
    x = tf.nest.map_structure(tf.convert_to_tensor, x)
    model_inputs = {id(t) for t in tf.nest.flatten(x)}
    counted = []

    def recording(layer, call):
        def call_and_count(inputs, *args, **kwargs):
            outputs = call(inputs, *args, **kwargs)
            first = not counted or id(inputs) in model_inputs
            counted.append(2 * (2 if first else 3) * _forward_products(layer, inputs, outputs))
            return outputs
        return call_and_count

    for layer in layers:
        layer.call = recording(layer, layer.call)
    try:
        model(x, training=True)
    finally:
        for layer in layers:
            del layer.call
    return sum(counted)
