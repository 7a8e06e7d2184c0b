"""The training engine, as Keras separates it: `Trainer` holds what `compile` holds and the
compiled calls (`engine`); the numeric steps (`step`), the counters and checks after each step
(`step_checks`), calls of several steps and the epoch's schedule (`calls`), TensorBoard
(`summaries`); `Trainer.fit` runs the epoch loop (`fit_loop`) and `train` is both in one call
(`loop`), with data as `fit` takes it (`fit_data`), the checks before the first step (`input_checks`),
checkpoints (`checkpointing`), `tf.distribute` (`distribute`) and batch-norm recalibration
(`batchnorm`). Options are `spec_impl.options`; mixed precision is `spec_impl.precision`, which
the models import too."""

from spec_impl.trainer.auto import AUTO_MODES, Calibration
from spec_impl.trainer.calls import XLA_UNROLL, Call, schedule
from spec_impl.trainer.distribute import make_strategy
from spec_impl.trainer.engine import Trainer
from spec_impl.trainer.fit_data import dataset_steps, untuned_options
from spec_impl.trainer.input_checks import is_sparse
from spec_impl.trainer.loop import train

# The engine's public API: what `train` users and the benchmarks (`spec_impl.bench`) import.
__all__ = ["AUTO_MODES", "XLA_UNROLL", "Calibration", "Call", "Trainer", "dataset_steps",
           "is_sparse", "make_strategy", "schedule", "train", "untuned_options"]
