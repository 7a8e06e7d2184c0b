"""Data as `fit` takes it, resolved by Keras's own data adapters.

Arrays (with `batch_size`, `shuffle`, `sample_weight`, `class_weight`), `tf.data` datasets of
`(x, y)` or `(x, y, sample_weight)`, Python generators and `keras.utils.PyDataset` all become a
`tf.data.Dataset` through the adapter `fit` uses, so both loops see the same batches in the same
order. `Batches` then iterates them epoch by epoch as `fit` does, with `steps_per_epoch`.
"""

import warnings

import keras
import tensorflow as tf

from spec_impl.trainer import keras_api

DEFAULT_BATCH_SIZE = 32  # fit's default for arrays


def untuned_options():
    """`tf.data.Options` with autotuning off, for input pipelines that only slice and batch.

    Slicing and batching have nothing to tune, and tf.data's autotuning, on by default, stalls
    the steps of a CPU-bound model on a small machine (docs/benchmarks.md: MiniInception's step
    +30 % on 2 cores).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def _is_arrays(x):
    return not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset)) and not hasattr(x, "__next__")


class Batches:
    """One side's batches (training or validation) for a whole run, iterated as `fit` does.

    Without `steps_per_epoch` each epoch is one fresh pass over the data. With it, an epoch is
    `steps_per_epoch` batches of one iterator that continues across epochs (a repeated dataset
    is read once from start to end); when a pass of known length ends, the epoch ends there (with
    a warning, unless the pass ended with the epoch) and the next epoch starts a fresh pass at
    the first batch, as `fit`'s `EpochIterator` does.

    Args:
        dataset: the batched `tf.data.Dataset` of `(x, y)` or `(x, y, sample_weight)`.
        steps_per_epoch: batches per epoch, or `None` for one pass.
        name: the argument the data came from, for error messages.
        rereadable: whether the data can be read once more without losing a batch (arrays and
            datasets can, generators cannot), for the checks before the first step.
    """

    def __init__(self, dataset, steps_per_epoch=None, name="x", rereadable=True,
                 steps_name="steps_per_epoch"):
        self.dataset = dataset
        self.name = name
        cardinality = int(dataset.cardinality())
        self.infinite = cardinality == tf.data.INFINITE_CARDINALITY
        self.length = cardinality if cardinality >= 0 else None  # batches in one pass
        self.rereadable = rereadable and self.length is not None
        self.last_full = False  # whether the last batch of a pass is known to be full-size
        self.batch_size = None  # the batch size, where it is known (`batches`)
        if steps_per_epoch is not None:
            if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) \
                    or steps_per_epoch < 1:
                raise ValueError(f"Expected a positive integer `{steps_name}`. "
                                 f"Received: {steps_name}={steps_per_epoch!r}")
        elif self.infinite:
            raise ValueError(
                f"`{name}` is an infinitely repeated dataset, so an epoch never ends: pass "
                f"`{steps_name}` (batches per epoch). Received: {steps_name}=None")
        self.steps_per_epoch = steps_per_epoch
        self._iterator = None
        self._read = 0  # batches read from the current pass
        self._started = False  # whether an epoch of this run has read from the data

    @property
    def steps(self):
        """Batches per epoch (the progress bar's count), or `None` when unknown until the data
        run out."""
        return self.steps_per_epoch or self.length

    def _pass_start(self, epoch):
        """With `steps_per_epoch` over a pass of known length: where epoch `epoch` starts in its
        pass, and how many steps it runs (an epoch that reaches the pass's end stops there)."""
        start = 0
        for _ in range(epoch + 1):
            if start >= self.length:
                start = 0
            steps = min(self.steps_per_epoch, self.length - start)
            start, begin = start + steps, start
        return begin, steps

    def start_epoch(self, trainer, epoch, step=0):
        """The iterator epoch `epoch` reads from its step `step` on (`trainer.iterator`,
        distributed under a strategy), and the epoch's number of steps (`None`: until the
        data run out)."""
        if self.steps_per_epoch is None:
            self._iterator = trainer.iterator(self.dataset, step)
            return self._iterator, self.length
        if self.length is None:  # read on across epochs; a resume skips what was read
            if self._iterator is None:
                skip = 0 if self._started else epoch * self.steps_per_epoch + step
                self._iterator = trainer.iterator(self.dataset, skip)
            self._started = True
            return self._iterator, self.steps_per_epoch
        begin, steps = self._pass_start(epoch)
        if self._iterator is None or self._read != begin + step:
            self._iterator = trainer.iterator(self.dataset, begin + step)
            self._read = begin + step
        return self._iterator, steps

    def advance(self, ran, expected):
        """`ran` of `expected` steps ran: fewer means the data ran out."""
        self._read += ran
        if ran < expected:
            self.ran_out()

    def end_epoch(self, steps):
        """At the end of an epoch of `steps` steps: a pass that ended starts afresh, with
        `fit`'s warning where it cut the epoch short."""
        if self.steps_per_epoch is not None and self.length is not None \
                and self._read >= self.length:
            if steps < self.steps_per_epoch:
                self._warn_ran_out()
            self._iterator, self._read = None, 0

    def ran_out(self):
        """The data ended before the epoch did: the next epoch starts a fresh pass (and, with
        `steps_per_epoch`, warns as `fit` does)."""
        if self.steps_per_epoch is not None:
            self._warn_ran_out()
        self._iterator, self._read = None, 0

    def _warn_ran_out(self):
        warnings.warn(f"`{self.name}` ran out of data before `steps_per_epoch` "
                      f"({self.steps_per_epoch}) batches; the epoch ends early. Repeat "
                      f"the dataset (`.repeat()`) to give every epoch its steps.",
                      stacklevel=4)


def batches(x, y=None, sample_weight=None, *, batch_size=None, shuffle=False, class_weight=None,
            steps_per_epoch=None, name="x", steps_name="steps_per_epoch"):
    """`Batches` of what `fit` takes as `x`, `y`, `sample_weight` (the same argument rules)."""
    if _is_arrays(x) and batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                   or batch_size < 1):
        raise ValueError(f"Expected a positive integer batch_size. Received: batch_size={batch_size!r}")
    # `shuffle` applies to arrays only; a dataset or generator comes in its own order (fit
    # warns that it ignores shuffle=True there, even at its default: train says nothing).
    adapter = keras_api.data_adapter(x, y, sample_weight, batch_size=batch_size,
                                     steps_per_epoch=steps_per_epoch,
                                     shuffle=shuffle and _is_arrays(x),
                                     class_weight=class_weight)
    dataset = adapter.get_tf_dataset()
    known = adapter.num_batches  # arrays: known, though tf.data cannot tell through the shuffle
    if known is not None and int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(known))
    if _is_arrays(x):
        dataset = dataset.with_options(untuned_options())
    rereadable = _is_arrays(x) or isinstance(x, tf.data.Dataset)
    batches = Batches(dataset, steps_per_epoch, name, rereadable, steps_name)
    first = tf.nest.flatten(dataset.element_spec)[0]  # arrays: unknown (a partial last batch)
    batches.batch_size = batch_size if _is_arrays(x) else first.shape[0] if first.shape else None
    if _is_arrays(x) and batch_size:  # arrays: whether the last batch is a full one is known
        batches.last_full = len(tf.nest.flatten(x)[0]) % batch_size == 0
    return batches


def validation_batches(validation_data, *, batch_size=None, steps=None):
    """`Batches` of `fit`'s `validation_data`: `(x, y)`, `(x, y, sample_weight)`, a dataset, a
    generator or a `PyDataset`; never shuffled."""
    if isinstance(validation_data, (tuple, list)):
        if len(validation_data) not in (2, 3):
            raise ValueError(f"Expected `validation_data` to be (x, y) or (x, y, sample_weight). "
                             f"Received: a {type(validation_data).__name__} of "
                             f"{len(validation_data)} items")
        x, y, weight = keras.utils.unpack_x_y_sample_weight(tuple(validation_data))
    else:
        x, y, weight = validation_data, None, None
    return batches(x, y, weight, batch_size=batch_size, steps_per_epoch=steps,
                   name="validation_data", steps_name="validation_steps")


def split_for_validation(x, y, sample_weight, validation_split):
    """`fit(validation_split=)`: `((x, y, sample_weight), (x_val, y_val, w_val))`, the
    validation part the last fraction of the arrays, taken before any shuffling."""
    if not 0 < validation_split < 1:
        raise ValueError(f"Expected `validation_split` in (0, 1). "
                         f"Received: validation_split={validation_split!r}")
    if not _is_arrays(x):
        raise ValueError(f"`validation_split` needs array data (as in fit); split a "
                         f"{type(x).__name__} yourself and pass `validation_data`.")
    return keras_api.train_validation_split((x, y, sample_weight), validation_split)


def dataset_steps(dataset):
    """The number of batches of `dataset`, or `None` when TensorFlow cannot tell."""
    steps = int(dataset.cardinality())
    return steps if steps >= 0 else None
