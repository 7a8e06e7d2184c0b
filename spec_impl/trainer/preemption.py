"""Preemption: on `SIGTERM` or `SIGINT`, finish the compiled call in flight, checkpoint at that
step, stop.

A spot VM, Kubernetes or a batch scheduler sends `SIGTERM` before taking the machine. While
`train` runs, a handler of `SIGTERM` and of `SIGINT` (Ctrl-C; installed in the main thread, the
previous ones restored at the end) only records the signal; a second one while the run stops is
ignored, so that the checkpoint being written is finished. The loop looks at it after every
compiled call and at the end of every epoch: it writes a checkpoint at that exact step (with
`checkpoint_dir`) and raises `TrainingPreempted`; `spec-impl train` turns that into one line and exit code
`PREEMPTED_EXIT_CODE` (130, the shell's code for Ctrl-C, after `SIGINT`). A rerun resumes from
the checkpoint. Watches nest: `spec-impl train` holds one for the whole command, so a signal
that arrives before `train` starts stops it at its first call, and one that arrives after the
loop (while the model is saved and evaluated) lets the command finish and exit with that code.

On a multi-worker cluster the signal reaches one worker, so the workers agree: after every call
and at every epoch's end, each contributes its flag to one all-reduce (the same collective at the
same point on every worker), and all stop at the same step. TensorFlow's own
`tf.distribute.experimental.PreemptionCheckpointHandler` is not used: it asks the GCE metadata
server whether it runs on Google Cloud (an HTTP request at start-up) and does nothing on a CPU
VM there, and it counts single-step calls only.
"""

import signal
import threading

import tensorflow as tf

# What TensorFlow's `TerminationConfig` exits with after a preemption checkpoint on platforms
# other than Google Cloud (`sys.exit(42)`): a scheduler can tell "stopped cleanly, restart me"
# from a crash (1) and from bad arguments (2).
PREEMPTED_EXIT_CODE = 42
INTERRUPTED_EXIT_CODE = 128 + signal.SIGINT  # 130: what a shell reports for Ctrl-C
EXIT_CODES = {signal.SIGTERM: PREEMPTED_EXIT_CODE, signal.SIGINT: INTERRUPTED_EXIT_CODE}


class TrainingPreempted(Exception):
    """Training stopped on `SIGTERM` or `SIGINT`, after a checkpoint if there was a
    `checkpoint_dir`.

    Attributes:
        epoch: the epoch (from 0) in which training stopped.
        step: the steps of that epoch that had run.
        checkpoint: the checkpoint written at that point, or `None` without `checkpoint_dir`.
        signal: the signal received (`signal.SIGTERM` or `signal.SIGINT`).
        exit_code: what `spec-impl train` exits with: 42 after `SIGTERM`, 130 after `SIGINT`.
    """

    def __init__(self, epoch, step, checkpoint, signum=signal.SIGTERM):
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint
        self.signal, self.exit_code = signal.Signals(signum), EXIT_CODES[signum]
        where = (f"checkpoint {checkpoint} written; run again with the same checkpoint folder to "
                 f"resume from it" if checkpoint else "no checkpoint_dir, so nothing was saved")
        super().__init__(f"Stopped by {self.signal.name} after epoch {epoch + 1}, step {step}: "
                         f"{where}.")


def _multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and bool(resolver.cluster_spec().jobs)


class PreemptionWatch:
    """`with PreemptionWatch(strategy) as watch:` catches `SIGTERM` and `SIGINT` for the block;
    `watch.stop_now()` says whether to stop (agreed by every worker of a cluster), and
    `watch.signal` is the first signal received (or `None`). A watch inside another takes over
    a signal the outer one has received, and hands its own back to it at the end.

    At the end each signal's handler is put back to what it was, whatever it was: Python's
    default, ignored (a process started in the background inherits SIGINT ignored), or the
    user's own. Outside the main thread Python cannot install signal handlers, and a handler
    installed outside Python could not be put back: those signals keep their usual effect.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, strategy=None):
        self.signal = None
        self._previous = {}
        self._agree = None
        if strategy is not None and _multi_worker(strategy):
            @tf.function
            def agree(flag):
                per_replica = strategy.run(lambda f: tf.identity(f), args=(flag,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._agree = agree

    @property
    def requested(self):
        """Whether a signal has been received."""
        return self.signal is not None

    def _handle(self, signum, frame):
        if self.signal is None:  # a second signal while stopping: finish stopping
            self.signal = signal.Signals(signum)

    @staticmethod
    def _watch_of(handler):
        owner = getattr(handler, "__self__", None)
        return owner if isinstance(owner, PreemptionWatch) else None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is None:  # not Python's: it could not be put back
                    continue
                self._previous[signum] = signal.signal(signum, self._handle)
                outer = self._watch_of(self._previous[signum])
                if outer is not None and self.signal is None:
                    self.signal = outer.signal
        return self

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
            outer = self._watch_of(previous)
            if outer is not None and outer.signal is None:
                outer.signal = self.signal
        self._previous = {}

    def stop_now(self):
        """Whether this process (or, on a cluster, any worker) has received a signal."""
        if self._agree is None:
            return self.requested
        return int(self._agree(tf.constant(int(self.requested), tf.int32))) > 0
