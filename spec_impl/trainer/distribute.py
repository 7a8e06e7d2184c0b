"""`tf.distribute` for the training engine: strategies, the chief's files, the rules of the loop.

The rules a hand-written loop must follow under a strategy, each pinned by a test:

- the model, the optimizer and the metrics are created inside `strategy.scope()`;
- each replica's loss is its per-example loss summed and divided by the *global* batch size
  (`tf.nn.compute_average_loss`), so that the gradients, summed over replicas by the optimizer,
  are those of the global batch. The global size is all-reduced, so an uneven partial last
  batch counts right too; `compute_average_loss`'s default (local size x replicas) does not;
- regularization and `add_loss` terms (`model.losses`) are divided among the replicas: a weight
  penalty, which every replica computes whole, by the number of replicas
  (`tf.nn.scale_regularization_loss`). The loop weights each replica's terms by its share of
  the global batch, which is that on an even split and also right for an `add_loss` term (a
  mean over the replica's own batch) on an uneven partial batch, where 1 / replicas is not;
- `model.losses` is read right after the forward pass, before any cross-replica call: Keras
  keeps it in one list shared by the replica threads, which the next replica's call replaces;
- a `keras.losses.Loss` with its default reduction, called inside `strategy.run`, already divides
  by the number of replicas on Keras 3 (`scale_loss_for_distribution`): the loop asks it for
  per-example values (`reduction=None`) instead, so nothing is scaled twice;
- the datasets are distributed (`strategy.experimental_distribute_dataset`);
- only the chief writes TensorBoard events, checkpoints and the saved model; the other workers
  write to temporary folders that are removed (TensorFlow's multi-worker guide).
"""

import contextlib
import copy
import json
import os
import shutil
import tempfile

import tensorflow as tf

from spec_impl._validation import STRATEGIES, check_choice, check_positive_int
from spec_impl.trainer import keras_api


def make_strategy(kind="default", devices=None):
    """A `tf.distribute.Strategy` of `kind`, on this machine's devices.

    `"mirrored"` replicates on `devices` GPUs when there are that many, and otherwise splits the
    CPU into `devices` logical devices, so that it runs (and is tested) on a CPU-only machine.
    On logical CPU devices gradients are reduced through one device (`ReductionToOneDevice`):
    TensorFlow's CPU collectives key their groups by number, so a second mirrored strategy of
    another size in the same process would fail its first step.

    Args:
        kind: `"default"` (one device, no replication), `"mirrored"` (one process, several
            devices) or `"multiworker"` (several processes; the cluster is read from the
            `TF_CONFIG` environment variable, as TensorFlow does).
        devices: the number of replicas for `"mirrored"` (default: every GPU, or 2 CPU devices).

    Returns:
        The strategy.

    Raises:
        ValueError: an unknown `kind`, a bad `devices`, `devices` with another kind, or a
            `"multiworker"` strategy without `TF_CONFIG`.
        RuntimeError: `devices` CPU devices asked for after TensorFlow initialised fewer.
    """
    check_choice("kind", kind, STRATEGIES)
    if devices is not None:
        check_positive_int("devices", devices)
        if kind != "mirrored":
            raise ValueError(f"`devices` applies to kind='mirrored' only. Received: kind={kind!r}, "
                             f"devices={devices}")
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("kind='multiworker' reads the cluster from the TF_CONFIG environment "
                             "variable, which is not set (README, 'Distributed training').")
        json.loads(os.environ["TF_CONFIG"])  # a malformed value fails here, not in TensorFlow
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and (devices is None or len(gpus) >= devices):
        names = [f"/gpu:{i}" for i in range(devices or len(gpus))]
        return tf.distribute.MirroredStrategy(names)
    names = [d.name for d in cpu_devices(devices or 2)]
    return tf.distribute.MirroredStrategy(names,
                                          cross_device_ops=tf.distribute.ReductionToOneDevice())


def cpu_devices(count):
    """The first `count` logical CPU devices, splitting the CPU into them if TensorFlow has not
    initialised its devices yet.

    Raises:
        RuntimeError: TensorFlow is initialised with fewer logical CPU devices.
    """
    check_positive_int("count", count)
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is None or len(configured) < count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
        except RuntimeError:
            have = len(tf.config.list_logical_devices("CPU"))
            raise RuntimeError(
                f"{count} logical CPU devices were asked for, but TensorFlow has already "
                f"initialised its devices with {have}. Create the strategy before anything else "
                f"runs a TensorFlow operation, or call spec_impl.trainer.distribute.cpu_devices({count}) "
                f"first thing in the program."
            ) from None
    return tf.config.list_logical_devices("CPU")[:count]


def strategy_or_none(strategy):
    """`strategy`, or `None` for no strategy or TensorFlow's default (one-device) strategy.

    Raises:
        ValueError: `strategy` is a name: the model must have been built in the strategy's
            scope, so `train` takes the strategy itself.
    """
    if isinstance(strategy, str):
        raise ValueError(f"Expected a tf.distribute.Strategy in whose scope the model was built. "
                         f"Received: strategy={strategy!r}; make one with "
                         f"spec_impl.make_strategy({strategy!r}) and build the model in its "
                         f"scope().")
    default = strategy is None or type(strategy).__name__ == "_DefaultDistributionStrategy"
    return None if default else strategy


def is_chief(strategy=None):
    """Whether this process writes files: always, except on a multi-worker non-chief worker."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


@contextlib.contextmanager
def chief_path(path, strategy=None):
    """Yield `path` on the chief and a temporary folder elsewhere, removed on exit.

    Every worker must run the same saving code (variables may be read collectively), but only
    the chief's copy is kept. `path` `None` yields `None`.
    """
    if path is None or is_chief(strategy):
        yield path
        return
    scratch = tempfile.mkdtemp(prefix="spec_impl-worker-")
    try:
        yield os.path.join(scratch, os.path.basename(os.path.normpath(str(path))))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def distribute_dataset(strategy, dataset):
    """`dataset`, sharded by element across workers and split across replicas per step."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def check_created_in_scope(model, strategy):
    """Raise `ValueError` unless every variable of `model` was created in `strategy.scope()`."""
    for variable in model.variables:
        if not strategy.extended.variable_created_in_scope(getattr(variable, "value", variable)):
            raise ValueError(
                f"The variable {variable.path!r} of model {model.name!r} was created outside "
                f"the strategy's scope. Build the model (and its optimizer) inside "
                f"`with strategy.scope():`, then pass the strategy to train()."
            )


def check_optimizer_scope(optimizer, strategy):
    """Raise `ValueError` unless `optimizer` was created in `strategy.scope()`.

    A Keras optimizer records the strategy current at its creation and creates its slots and
    sums its gradients through it; one created outside the scope fails when its slots are built
    (TensorFlow's `RuntimeError: Mixing different tf.distribute.Strategy objects`).
    """
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
    for opt in {id(optimizer): optimizer, id(inner): inner}.values():
        recorded = keras_api.optimizer_strategy(opt, strategy)
        if recorded is not strategy:
            raise ValueError(
                f"The optimizer {type(opt).__name__} was created outside the strategy's scope. "
                f"Create it inside `with strategy.scope():`, or pass its name "
                f"(optimizer={type(opt).__name__.lower()!r})."
            )


XLA_REFUSED = "XLA cannot read a variable that lives on another device"


def check_xla_devices(strategy):
    """Refuse XLA steps on a strategy of several CPU devices, which TensorFlow cannot run.

    Each replica's XLA cluster is placed on the first device and cannot reach the variables of
    the others (TensorFlow's XLA known issue "tf.Variable on a different device");
    `fit(jit_compile=True)` fails the same way, with an `InvalidArgumentError` at the first step.
    """
    devices = strategy.extended.worker_devices
    if len(devices) > 1 and all("CPU" in d.upper() for d in devices):
        raise ValueError(
            f"mode='xla' with {type(strategy).__name__} on {len(devices)} CPU devices: "
            f"{XLA_REFUSED} (TensorFlow's XLA known issue 'tf.Variable on a different device'; "
            f"fit(jit_compile=True) fails the same way). Use mode='function'."
        )


def per_example_loss(loss):
    """A copy of `loss` (a `keras.losses.Loss`) giving per-example values (`reduction=None`)."""
    unreduced = copy.copy(loss)
    unreduced.reduction = None
    return unreduced
