"""`LossHistory` (document 002): per-batch losses and a loss plot per epoch; `CallRecorder`,
every hook call a loop makes (to compare two loops)."""

import os

import keras

from spec_impl._plot import new_figure
from spec_impl.saving import save_figure_atomic


class LossHistory(keras.callbacks.Callback):
    """Record the loss after every batch and save a plot of the epoch's curve as a PNG.

    Works the same under `model.fit` and `spec_impl.train`. As in both loops, the per-batch
    `loss` is the running mean over the epoch so far.

    Args:
        out_dir: folder for `plot_at_epoch_{epoch}.png` (created if needed).
    """

    def __init__(self, out_dir):
        super().__init__()
        self.out_dir = os.fspath(out_dir)
        self.per_batch_losses = []
        self.epoch_losses = []  # one list per finished epoch
        self.plots = []

    def on_train_begin(self, logs=None):
        self.per_batch_losses = []
        self.epoch_losses = []
        self.plots = []

    def on_train_batch_end(self, batch, logs=None):
        self.per_batch_losses.append(float((logs or {})["loss"]))

    def on_epoch_end(self, epoch, logs=None):
        os.makedirs(self.out_dir, exist_ok=True)
        figure = new_figure((6, 4))
        axes = figure.add_subplot()
        axes.plot(range(len(self.per_batch_losses)), self.per_batch_losses,
                  label="Training loss for each batch")
        axes.set_xlabel(f"Batch (epoch {epoch})")
        axes.set_ylabel("Loss")
        axes.legend()
        path = os.path.join(self.out_dir, f"plot_at_epoch_{epoch}.png")
        save_figure_atomic(figure, path)
        self.plots.append(path)
        self.epoch_losses.append(self.per_batch_losses)
        self.per_batch_losses = []


class CallRecorder(keras.callbacks.Callback):
    """Records every training hook call, with its batch or epoch index (and the batch's loss),
    to compare the calls two loops make."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_batch_begin(self, batch, logs=None):
        self.calls.append(("begin", batch))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("end", batch, float(logs["loss"])))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch", epoch))
