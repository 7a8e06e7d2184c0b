"""What `Model.compile` resolves, resolved for the custom loop: data, losses and metrics.

`as_dataset` turns arrays into a batched `tf.data.Dataset`; `as_loss` a name, a function or a
list into a `keras.losses.Loss` (reduced as `compile` reduces); `resolve_metric` `"accuracy"`
into the accuracy metric that fits the labels, as `compile` does.
"""

import keras
import tensorflow as tf

PREFETCH_BATCHES = 2


def as_dataset(data, batch_size, name="train_data"):
    """A batched `tf.data.Dataset` from a dataset or an `(x, y)` pair of arrays."""
    if isinstance(data, tf.data.Dataset):
        return data
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(
            f"Expected `{name}` to be a tf.data.Dataset or an (x, y) pair. "
            f"Received: {type(data).__name__}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected a positive integer batch_size. Received: batch_size={batch_size!r}")
    x, y = data
    # prefetch: the next batch is sliced while the current step runs. Slicing and batching have
    # nothing to tune, and tf.data's autotuning, on by default, stalls the steps of a CPU-bound
    # model on a small machine (README, benchmarks: MiniInception's step +30 % on 2 cores).
    return (tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
            .prefetch(PREFETCH_BATCHES).with_options(untuned_options()))



def untuned_options():
    """`tf.data.Options` with autotuning off, for input pipelines that only slice and batch."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def relaxed_spec(spec):
    """The dataset's element spec with a free batch axis: one trace serves a partial batch too."""
    return tf.nest.map_structure(
        lambda s: tf.TensorSpec([None, *s.shape[1:]], s.dtype, name=s.name), spec)


class _SumOfLosses:
    """One loss per output of a multi-output model, summed (as `compile` does with a list)."""

    def __init__(self, losses):
        self.losses = [as_loss(loss) for loss in losses]

    def __call__(self, y_true, y_pred):
        return tf.add_n([fn(t, p) for fn, t, p in zip(self.losses, y_true, y_pred)])


def as_loss(loss):
    """A `keras.losses.Loss` from an object, a name or a function (reduced as `compile` does);
    a list or tuple gives the sum of one loss per output."""
    if isinstance(loss, (list, tuple)):
        return _SumOfLosses(loss)
    loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        return loss
    if not callable(loss):
        raise ValueError(f"Expected a Keras loss, a loss name or a function. Received: loss={loss!r}")
    from keras.src.losses.losses import LossFunctionWrapper  # what `compile` wraps functions in

    return LossFunctionWrapper(loss, name=getattr(loss, "__name__", None))


def resolve_metric(metric, y_spec=None):
    """A metric object from an object or a name; `"accuracy"` as `compile` resolves it.

    Integer labels give `SparseCategoricalAccuracy`, one-hot labels `CategoricalAccuracy`,
    single-column float labels `BinaryAccuracy`; all named `accuracy`, as `fit` reports them.
    """
    if metric not in ("accuracy", "acc"):
        return keras.metrics.get(metric)
    if y_spec is None or y_spec.dtype.is_integer:
        return keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if y_spec.shape.rank and y_spec.shape[-1] not in (None, 1):
        return keras.metrics.CategoricalAccuracy(name="accuracy")
    return keras.metrics.BinaryAccuracy(name="accuracy")
