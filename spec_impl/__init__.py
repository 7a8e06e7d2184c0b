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
from spec_impl.cnn import SubclassedCNN, functional_cnn, logits_loss, sequential_cnn, subclassed_cnn  # noqa: E402
from spec_impl.data import load_dataset, load_regression  # noqa: E402
from spec_impl.deep_dive import (  # noqa: E402
    Classifier,
    CustomerTicketModel,
    add_difficulty_head,
    get_mnist_model,
    my_example_model,
    ticket_classifier,
)
from spec_impl.inception import (  # noqa: E402
    ConvModule,
    DownsampleModule,
    InceptionModel,
    InceptionModule,
    MiniInception,
)
from spec_impl.registry import MODELS, get_model_spec, parameter_counts  # noqa: E402

__version__ = "0.1.0"
