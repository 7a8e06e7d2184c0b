"""The Keras internals the engine shares with `Model.fit`, in one place.

`fit` resolves data (arrays, datasets, generators, `PyDataset`, `class_weight`, `shuffle`,
`validation_split`) and builds its metrics through functions that Keras 3 keeps under
`keras.src`. The engine calls the same ones, so that `train` and `fit` see the same batches and
log the same names; each is named here once, so a Keras upgrade that moves one breaks one file.
"""

import keras
from keras.src.backend.tensorflow.trainer import reduce_per_replica as _reduce_per_replica
from keras.src.losses.loss import unscale_loss_for_distribution
from keras.src.trainers.data_adapters import array_slicing, get_data_adapter
from keras.src.trainers.trainer import model_supports_jit as _model_supports_jit

__all__ = [
    "all_layers", "backup_initial_epoch", "compile_state", "compiled_loss", "data_adapter",
    "learning_rate_schedule", "loss_tracker", "model_supports_jit", "optimizer_strategy",
    "reduce_per_replica", "symbolic_build", "train_validation_split",
    "unscale_loss_for_distribution",
]


def data_adapter(x, y=None, sample_weight=None, *, batch_size=None, steps_per_epoch=None,
                 shuffle=False, class_weight=None):
    """Keras's data adapter for what `fit` accepts (`adapter.get_tf_dataset()`,
    `adapter.num_batches`)."""
    return get_data_adapter(x=x, y=y, sample_weight=sample_weight, batch_size=batch_size,
                            steps_per_epoch=steps_per_epoch, shuffle=shuffle,
                            class_weight=class_weight)


def train_validation_split(arrays, validation_split):
    """`fit(validation_split=)`: the last `validation_split` of the arrays, unshuffled."""
    return array_slicing.train_validation_split(arrays, validation_split=validation_split)


def symbolic_build(model, element_spec):
    """Build the model, its compiled loss and metrics from a batch's shapes and dtypes, as
    `fit` does before its first step (nothing is read from the data)."""
    model._symbolic_build(data_batch=element_spec)


def loss_tracker(model):
    """The `Mean` metric named `loss` that `compile` gives the model (what `fit` logs)."""
    return model._loss_tracker


def reduce_per_replica(values, strategy):
    """The logs a model's own step returned on each replica, reduced as `fit` reduces them
    (`"auto"`: the mean over replicas, the first replica's on a TPU)."""
    return _reduce_per_replica(values, strategy, reduction="auto")


def all_layers(model):
    """Every layer inside `model`, nested ones included (those a subclassed layer holds as
    attributes, which `model.layers` does not list)."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def compiled_loss(model):
    """The loss `compile` built (`Model.compute_loss` adds `model.losses` to it; the engine
    adds them per replica itself)."""
    return model._compile_loss


def backup_initial_epoch(model):
    """The epoch `keras.callbacks.BackupAndRestore` restored and `fit` resumes from, or `None`."""
    return getattr(model, "_initial_epoch", None)


def optimizer_strategy(optimizer, default):
    """The `tf.distribute` strategy an optimizer was created under, or `default` where Keras
    recorded none."""
    return getattr(optimizer, "_distribution_strategy", default)


def learning_rate_schedule(optimizer):
    """The optimizer's `LearningRateSchedule`, or `None` for a fixed rate."""
    rate = getattr(optimizer, "_learning_rate", None)
    return rate if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) else None



def compile_state(model):
    """What `compile` put on the model that a traced step reads: the optimizer, the loss
    tracker, the compiled loss and the compiled metrics. A later `compile` replaces each."""
    return (model.optimizer, getattr(model, "_loss_tracker", None),
            getattr(model, "_compile_loss", None), getattr(model, "_compile_metrics", None))


def model_supports_jit(model):
    """Whether `fit(jit_compile=True)` would compile `model` with XLA: every layer declares
    `supports_jit` (and op determinism is off); else `fit` warns and runs without XLA."""
    return _model_supports_jit(model)
