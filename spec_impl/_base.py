"""What the package's layers and models share: the registration decorator, a `build` for
subclassed models whose weights all live in sub-layers, and the dtype keywords of sub-layers."""

import keras

PACKAGE = "spec_impl"
# Every layer, model, loss, metric and function that a `.keras` file may name is registered
# under the package's name (`spec_impl>MiniInception`), so that `load_model` finds it.
serializable = keras.saving.register_keras_serializable(package=PACKAGE)


class BuildByCallMixin:
    """`model.build((None, *shape))` creates every weight by a symbolic call.

    Keras 3's default `Model.build` cannot see inside `call`, so a subclassed model built with
    `build(shape)` stays empty (and `.keras` reloads or `load_weights` then fail). Running `call`
    once on a symbolic `KerasTensor` creates all the sub-layers' weights without any data.
    """

    def build(self, input_shape):
        self._check_build_shape(input_shape)
        # compute_output_spec traces `call` on placeholders, so TensorFlow ops in `call` work too;
        # in the compute dtype, as `__call__` would cast a float input to (float16 when mixed).
        self.compute_output_spec(keras.KerasTensor(tuple(input_shape), dtype=self.compute_dtype))
        self.built = True

    def _check_build_shape(self, input_shape):
        """Hook for subclasses that validate the build shape."""


def inner(layer):
    """Keyword arguments for a layer that `layer` creates: its own dtype policy, passed on as
    Keras's composite layers do (`MultiHeadAttention._get_common_kwargs_for_sublayer`)."""
    return {"dtype": layer.dtype_policy}


def outer(layer):
    """Keyword arguments for a model's output layer: float32 under a mixed policy (the Keras
    mixed-precision guide), else `layer`'s own policy."""
    from spec_impl.precision import output_dtype

    return {"dtype": output_dtype(layer.dtype_policy)}
