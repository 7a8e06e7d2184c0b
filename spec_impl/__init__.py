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
from spec_impl.custom_functions import (  # noqa: E402
    MyL1Regularizer,
    documented_dense,
    my_glorot_initializer,
    my_l1_regularizer,
    my_positive_weights,
    my_softplus,
)
from spec_impl.layers import (  # noqa: E402
    Exponential,
    MyDense,
    MyGaussianNoise,
    MyMultiLayer,
    ResidualBlock,
    exponential_layer,
)
from spec_impl.losses import HuberLoss, create_huber, huber_fn  # noqa: E402
from spec_impl.metrics import HuberMetric, RootMeanSquaredError  # noqa: E402
from spec_impl.regressors import (  # noqa: E402
    CustomModel,
    ReconstructionRegressor,
    ResidualRegressor,
    custom_mnist_model,
)
from spec_impl.saving import check_keras_archive, load_model_checked, save_model_atomic  # noqa: E402
from spec_impl.batchnorm import recalibrate_batch_norm  # noqa: E402
from spec_impl.callbacks import LossHistory  # noqa: E402
from spec_impl.engine import Trainer, train  # noqa: E402
from spec_impl.evaluation import evaluate_classifier, predict_one, roc_auc_document  # noqa: E402
from spec_impl.precision import global_policy  # noqa: E402
from spec_impl.registry import MODELS, _load_all, get_model_spec, parameter_counts  # noqa: E402

_load_all()  # `spec_impl.MODELS` is complete on import

__version__ = "0.1.0"
