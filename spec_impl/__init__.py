"""spec_impl: an executable specification of custom modeling in TensorFlow 2 / Keras 3.

Everything listed in `__all__` is importable from here (`from spec_impl import MiniInception`).
The package imports lazily (PEP 562): `import spec_impl` loads no TensorFlow, and a name's module
is imported on first use, so `spec-impl --help` answers at once.
"""

import importlib
import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(["cube", "f", "f_stop_gradient", "finite_difference", "hessian",
                     "linear_loss_gradients", "my_better_softplus", "naive_softplus",
                     "stable_softplus", "tape_gradients", "tf_cube"], "autodiff"),
    **dict.fromkeys(["Classifier", "CustomerTicketModel", "FunctionalHeadModel", "add_difficulty_head",
                     "binary_classifier", "get_mnist_model",
                     "my_example_model", "ticket_classifier"], "deep_dive"),
    **dict.fromkeys(["ConvModule", "DownsampleModule", "InceptionModel", "InceptionModule",
                     "MiniInception"], "inception"),
    **dict.fromkeys(["MyL1Regularizer", "documented_dense", "my_glorot_initializer",
                     "my_l1_regularizer", "my_positive_weights", "my_softplus"], "custom_functions"),
    **dict.fromkeys(["Exponential", "LayerNormalization", "MyDense", "MyGaussianNoise",
                     "MyMultiLayer", "ResidualBlock", "exponential_layer"], "layers"),
    **dict.fromkeys(["CustomModel", "ReconstructionRegressor", "ResidualRegressor",
                     "custom_mnist_model"], "regressors"),
    **dict.fromkeys(["SubclassedCNN", "functional_cnn", "logits_loss", "sequential_cnn",
                     "subclassed_cnn"], "cnn"),
    **dict.fromkeys(["load_dataset", "load_regression"], "data"),
    **dict.fromkeys(["HuberLoss", "create_huber", "huber_fn"], "losses"),
    **dict.fromkeys(["HuberMeanMetric", "HuberMetric", "RootMeanSquaredError"], "metrics"),
    **dict.fromkeys(["multi_optimizer_step"], "multi_optimizer"),
    **dict.fromkeys(["check_keras_archive", "load_model_checked", "save_model_atomic"], "saving"),
    **dict.fromkeys(["recalibrate_batch_norm"], "trainer.batchnorm"),
    **dict.fromkeys(["LossHistory"], "callbacks"),
    **dict.fromkeys(["Trainer"], "trainer.engine"),
    **dict.fromkeys(["train"], "trainer.loop"),
    **dict.fromkeys(["make_strategy"], "trainer.distribute"),
    **dict.fromkeys(["evaluate_classifier", "predict_one", "roc_auc_document"], "evaluation"),
    **dict.fromkeys(["global_policy"], "precision"),
    **dict.fromkeys(["RunResult", "train_and_evaluate"], "workflow"),
    **dict.fromkeys(["FitArguments", "RunOptions", "TrainOptions"], "options"),
    **dict.fromkeys(["MODELS", "get_model_spec", "parameter_counts"], "registry"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'spec_impl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"spec_impl.{module}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
