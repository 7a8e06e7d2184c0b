"""The training engine, as Keras separates it: `Trainer` holds what `compile` holds and the
step functions (`engine`), `Trainer.fit` / `train` run the epoch loop (`loop`), with data as
`fit` takes it (`data`), the checks before the first step (`checks`), checkpoints
(`checkpointing`), `tf.distribute` (`distribute`), mixed precision (`precision`) and batch-norm
recalibration (`batchnorm`)."""

from spec_impl.trainer.engine import Trainer
from spec_impl.trainer.loop import train

__all__ = ["Trainer", "train"]
