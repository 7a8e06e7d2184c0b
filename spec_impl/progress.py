"""Per-epoch progress on the terminal with Keras's `Progbar` (ETA and running metrics)."""

import time

import keras

PROGBAR_INTERVAL = 0.05  # seconds between redraws; Keras's `Progbar` default


class EpochProgress:
    """A `keras.utils.Progbar` for one epoch, silent when `verbose == 0`.

    Args:
        epoch: the epoch index (from 0).
        epochs: the number of epochs.
        steps: batches per epoch, or `None` if unknown.
        verbose: 1 to show the bar, 0 for silence.
    """

    def __init__(self, epoch, epochs, steps, verbose):
        self.verbose = verbose
        self.steps = steps
        self.bar = None
        self.current = 0
        self.last_draw = None
        if verbose:
            print(f"Epoch {epoch + 1}/{epochs}")

    def update(self, step, read_logs):
        """Show `step` batches done with the running logs that `read_logs()` returns.

        `read_logs` (which waits for the device) is called only when the bar redraws: at most
        once per `Progbar` interval (0.05 s), and on the epoch's last step.
        """
        self.current = step
        if not self.verbose:
            return
        now = time.monotonic()
        due = self.last_draw is None or now - self.last_draw >= PROGBAR_INTERVAL
        if not due and (self.steps is None or step < self.steps):
            return
        self.last_draw = now
        logs = read_logs()
        if self.bar is None:
            self.bar = keras.utils.Progbar(self.steps, verbose=1, interval=PROGBAR_INTERVAL,
                                           stateful_metrics=list(logs))
        self.bar.update(step, values=list(logs.items()), finalize=False)

    def finish(self, logs):
        """Close the bar with the epoch's final logs (validation included)."""
        if not self.verbose:
            return
        if self.bar is None:
            self.bar = keras.utils.Progbar(self.steps, verbose=1, stateful_metrics=list(logs))
        self.bar.stateful_metrics |= set(logs)
        self.bar.update(self.current, values=list(logs.items()), finalize=True)
