"""A `build` for subclassed models whose weights all live in sub-layers."""

import keras


class BuildByCallMixin:
    """`model.build((None, *shape))` creates every weight by a symbolic call.

    Keras 3's default `Model.build` cannot see inside `call`, so a subclassed model built with
    `build(shape)` stays empty (and `.keras` reloads or `load_weights` then fail). Running `call`
    once on a symbolic `KerasTensor` creates all the sub-layers' weights without any data.
    """

    def build(self, input_shape):
        self._check_build_shape(input_shape)
        # compute_output_spec traces `call` on placeholders, so TensorFlow ops in `call` work too.
        self.compute_output_spec(keras.KerasTensor(tuple(input_shape)))
        self.built = True

    def _check_build_shape(self, input_shape):
        """Hook for subclasses that validate the build shape."""
