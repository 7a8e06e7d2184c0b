"""spec_impl: an executable specification of custom modeling in TensorFlow 2 / Keras 3."""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from spec_impl.autodiff import (  # noqa: E402
    cube,
    f,
    f_stop_gradient,
    finite_difference,
    hessian,
    linear_loss_gradients,
    my_better_softplus,
    naive_softplus,
    stable_softplus,
    tape_gradients,
    tf_cube,
)
from spec_impl.registry import MODELS, get_model_spec, parameter_counts  # noqa: E402

__version__ = "0.1.0"
