"""Preemption: on `SIGTERM`, finish the compiled call in flight, checkpoint at that step, stop.

A spot VM, Kubernetes or a batch scheduler sends `SIGTERM` before taking the machine. While
`train` runs, a `SIGTERM` handler (installed in the main thread, the previous one restored at the
end) only raises a flag. The loop looks at it after every compiled call and at the end of every
epoch: it writes a checkpoint at that exact step (with `checkpoint_dir`) and raises
`TrainingPreempted`; `spec-impl train` turns that into one line and exit code
`PREEMPTED_EXIT_CODE`. A rerun resumes from the checkpoint.

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


class TrainingPreempted(Exception):
    """Training stopped on `SIGTERM`, after a checkpoint if there was a `checkpoint_dir`.

    Attributes:
        epoch: the epoch (from 0) in which training stopped.
        step: the steps of that epoch that had run.
        checkpoint: the checkpoint written at that point, or `None` without `checkpoint_dir`.
    """

    def __init__(self, epoch, step, checkpoint):
        self.epoch, self.step, self.checkpoint = epoch, step, checkpoint
        where = (f"checkpoint {checkpoint} written; run again with the same checkpoint folder to "
                 f"resume from it" if checkpoint else "no checkpoint_dir, so nothing was saved")
        super().__init__(f"Stopped by SIGTERM after epoch {epoch + 1}, step {step}: {where}.")


def _multi_worker(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return resolver is not None and bool(resolver.cluster_spec().jobs)


class PreemptionWatch:
    """`with PreemptionWatch(strategy) as watch:` catches `SIGTERM` for the block;
    `watch.stop_now()` says whether to stop (agreed by every worker of a cluster).

    Outside the main thread Python cannot install signal handlers: `SIGTERM` then keeps its
    usual effect.
    """

    def __init__(self, strategy=None):
        self.requested = False
        self._previous = None
        self._agree = None
        if strategy is not None and _multi_worker(strategy):
            @tf.function
            def agree(flag):
                per_replica = strategy.run(lambda f: tf.identity(f), args=(flag,))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

            self._agree = agree

    def _handle(self, signum, frame):
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def stop_now(self):
        """Whether this process (or, on a cluster, any worker) has received `SIGTERM`."""
        if self._agree is None:
            return self.requested
        return int(self._agree(tf.constant(int(self.requested), tf.int32))) > 0
