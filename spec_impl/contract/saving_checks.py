"""The contract's checks that a layer or model survives its config, a `.keras` file (in this
process and in a fresh one) and a training step."""

import inspect
import os
import subprocess
import sys
import warnings

import numpy as np

from spec_impl.contract.component import as_list
from spec_impl.contract.core import Deferred, Failure, Skip, check, first_line
from spec_impl.contract.layer_checks import LAYERS

COMPILED_RTOL = 1e-5  # see numeric_checks: float32 results of the same math in another order
# Arguments every Keras layer takes, which `get_config` returns through the base class.
BASE_ARGUMENTS = {"self", "name", "dtype", "trainable", "autocast", "input_dim", "input_shape"}
CHILD_TIMEOUT_S = 300
TARGET_SEED = 13


def max_difference(a, b):
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a.shape != b.shape:
        return np.inf
    return float(np.max(np.abs(a - b), initial=0.0))


def assert_outputs_equal(got, want, what, rtol=0.0):
    """Raise `Failure` naming `what` unless the outputs agree (exactly, or within `rtol` of the
    largest magnitude)."""
    got, want = as_list(got), as_list(want)
    if len(got) != len(want):
        raise Failure(f"{what} gives {len(got)} outputs, not {len(want)}")
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        scale = max(1.0, float(np.max(np.abs(np.asarray(b, dtype="float64")), initial=0.0)))
        diff = max_difference(a, b)
        if not diff <= rtol * scale:
            raise Failure(f"{what}: output {i} differs by up to {diff:.3g} "
                          f"(allowed {rtol * scale:.3g})")


def missing_arguments(obj, config):
    """The `__init__` arguments of `obj`'s class that `config` does not hold."""
    params = inspect.signature(type(obj).__init__).parameters.values()
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.name not in BASE_ARGUMENTS and p.name not in config]


def _config_fault(obj, config, what):
    missing = missing_arguments(obj, config)
    if missing:
        names = ", ".join(f"`{m}`" for m in missing)
        raise Failure(f"`get_config` does not return {names}: `from_config` builds a different "
                      f"{type(obj).__name__} ({what})", f"add {names} to `get_config`")
    raise Failure(f"`from_config(get_config())` builds a different {type(obj).__name__} ({what})")


def copy_config(config):
    """A copy of `config`'s dicts and lists, their leaves shared: Keras's `Wrapper.from_config`
    and `Functional.from_config` consume the dict they are given, and some leaves (tracked
    lists of a random layer) cannot be deep-copied."""
    if isinstance(config, dict):
        return {k: copy_config(v) for k, v in config.items()}
    if isinstance(config, (list, tuple)) and type(config) in (list, tuple):
        return type(config)(copy_config(v) for v in config)
    return config


def _compare(ctx, got, want, what):
    from spec_impl.contract.numeric_checks import compare

    compare(ctx, got, want, what)


@check("config_round_trip", kinds=LAYERS, needs=("eager_call",),
       why="`from_config(get_config())` rebuilds the same layer: same config, and with the same "
           "weights (and seed-generator states) the same outputs; `.keras` files and "
           "`clone_model` rely on it",
       fix="return every `__init__` argument from `get_config`")
def config_round_trip(ctx):
    obj = ctx.obj
    config = obj.get_config()
    try:
        clone = type(obj).from_config(copy_config(config))
    except TypeError as error:
        _config_fault(obj, config, first_line(error))
    if clone.get_config() != config:
        keys = sorted(k for k in set(config) | set(clone.get_config())
                      if config.get(k) != clone.get_config().get(k))
        _config_fault(obj, config, f"config entries {keys} differ")
    ctx.call(clone, ctx.inputs, training=False)
    if len(clone.weights) != len(obj.weights):
        _config_fault(obj, config, f"{len(clone.weights)} weights instead of {len(obj.weights)}")
    try:
        clone.set_weights(obj.get_weights())
    except ValueError as error:
        _config_fault(obj, config, first_line(error))
    try:
        with ctx.same_draws(obj, clone) as draw:
            got = ctx.call(draw(clone), ctx.inputs, training=False)
            want = ctx.call(draw(obj), ctx.inputs, training=False)
        _compare(ctx, got, want, "the rebuilt layer")
    except Failure as failure:
        _config_fault(obj, config, failure.cause)
    return f"{len(config)} config entries"


def wrapped_model(ctx):
    """`ctx.obj` itself for a model, else a Functional model around it (built once)."""
    import keras

    if isinstance(ctx.obj, keras.Model):
        return ctx.obj
    if "model" not in ctx.cache:
        inputs = ctx.symbolic_inputs()
        ctx.cache["model"] = keras.Model(inputs, ctx.call(ctx.obj, inputs))
    return ctx.cache["model"]


NOT_REGISTERED = "Could not locate"  # Keras's error for a class it cannot find by name
NO_GRADIENTS = "No gradients provided"  # Keras's optimizer's, when no weight has a gradient


def saved_file(ctx):
    """The `.keras` file of the component (in a model around a layer), written once."""
    if "keras_file" not in ctx.cache:
        path = os.path.join(ctx.folder, "component.keras")
        wrapped_model(ctx).save(path)
        ctx.cache["keras_file"] = path
    return ctx.cache["keras_file"]


@check("keras_reload", kinds=LAYERS, needs=("config_round_trip",),
       why="a `.keras` file of the layer (in a model) reloads without `custom_objects` and "
           "predicts the same",
       fix="register the class with `@keras.saving.register_keras_serializable(package=...)`")
def keras_reload(ctx):
    import keras

    model = wrapped_model(ctx)
    path = saved_file(ctx)
    try:
        reloaded = keras.models.load_model(path)
    except Exception as error:
        if NOT_REGISTERED in str(error):
            raise Failure(f"the `.keras` file reloads only with `custom_objects`: "
                          f"{first_line(error)[:200]}") from error
        raise
    with ctx.same_draws(model, reloaded) as draw:
        got = draw(reloaded)(ctx.inputs, training=False)
        want = draw(model)(ctx.inputs, training=False)
    _compare(ctx, got, want, "the reloaded model")
    return os.path.basename(path)


def child_job(ctx, kind, saved):
    """The child's job for `saved`: `{kind, module, saved, inputs, outputs}`, its inputs written."""
    from spec_impl.contract.child import save_arrays

    if not ctx.target:
        raise Skip("the factory cannot be imported by name (a lambda or a local function); "
                   "give it as MODULE:FACTORY")
    inputs = os.path.join(ctx.folder, "inputs.npz")
    save_arrays(inputs, ctx.inputs)
    return {"kind": kind, "module": ctx.target.split(":")[0], "saved": saved, "inputs": inputs,
            "outputs": os.path.join(ctx.folder, "outputs.npz")}


def run_jobs(jobs):
    """Run `jobs` (from `child_job`) in one fresh Python; returns, per job, the outputs or the
    child's error line."""
    import json

    from spec_impl.contract.child import load_arrays

    if not jobs:
        return []
    manifest = os.path.join(os.path.dirname(jobs[0]["saved"]), "jobs.json")
    with open(manifest, "w") as f:
        json.dump(jobs, f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-m", "spec_impl.contract.child", manifest], env=env,
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT_S * len(jobs))
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    crash = (lines or [f"exit code {done.returncode}"])[-1][:300]
    found = []
    for job in jobs:
        if os.path.exists(job["outputs"]):
            found.append(load_arrays(job["outputs"]))
        elif os.path.exists(job["outputs"] + ".error"):
            with open(job["outputs"] + ".error") as f:
                found.append(f.read().strip()[:300])
        else:
            found.append(crash)
    return found


def child_failure(job, error):
    return Failure(f"in a fresh Python with only `{job['module']}` imported: {error}",
                   "register the class when its module is imported (decorate it at module "
                   "level, not inside the factory)")


def run_child(ctx, kind, saved, want, what):
    """Evaluate `saved` in a fresh Python that imports only the component's module and compare
    its outputs with `want`; queued instead when the context collects jobs (`Deferred`)."""
    job = child_job(ctx, kind, saved)
    if ctx.deferred is not None:
        ctx.deferred.append((job, lambda outputs: assert_outputs_equal(outputs, want, what)))
        raise Deferred()
    (outputs,) = run_jobs([job])
    if isinstance(outputs, str):
        raise child_failure(job, outputs)
    assert_outputs_equal(outputs, want, what)


@check("fresh_process_reload", kinds=LAYERS, needs=("keras_reload",),
       why="the `.keras` file reloads in a new Python process that imports only the component's "
           "module, as a user loading it later would",
       fix="register the class when its module is imported (decorate it at module level)")
def fresh_process_reload(ctx):
    from spec_impl.contract.numeric_checks import draws_at_inference

    if draws_at_inference(ctx):
        raise Skip("the layer draws random numbers, and a fresh process starts its own draws "
                   "(the reload itself is checked by keras_reload)")
    run_child(ctx, "model", saved_file(ctx), wrapped_model(ctx)(ctx.inputs, training=False),
              "the model reloaded in a fresh process")
    return f"only {ctx.target.split(':')[0]} imported"


@check("training_step", kinds=LAYERS, needs=("eager_call",),
       why="one `fit` step gives a finite loss and changes the trainable weights",
       fix="make the output depend on every trainable weight through differentiable ops")
def training_step(ctx):
    import keras

    model = wrapped_model(ctx)
    if not model.trainable_weights:
        raise Skip("no trainable weights")
    targets = ctx.train_target
    if targets is None:
        # N(0, 1) targets shaped like the outputs: a zero target can leave a weight without a
        # gradient at its initial value (PReLU's alpha of 0 under a zero target).
        rng = np.random.default_rng(TARGET_SEED)
        targets = [rng.standard_normal(np.shape(o)).astype(np.asarray(o).dtype)
                   if np.asarray(o).dtype.kind == "f" else np.zeros_like(np.asarray(o))
                   for o in as_list(model(ctx.inputs, training=False))]
        targets = targets[0] if len(targets) == 1 else targets
    start = [w.numpy().copy() for w in model.trainable_weights]
    if not model.compiled:
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss=ctx.loss)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Keras warns of weights without gradients
            history = model.fit(ctx.inputs, targets, epochs=1,
                                batch_size=ctx.batch, verbose=0)
    except ValueError as error:
        if NO_GRADIENTS in str(error):
            raise Failure("no trainable weight gets a gradient: the output depends on none") from error
        raise
    loss = history.history["loss"][0]
    if not np.isfinite(loss):
        raise Failure(f"the training step's loss is {loss}")
    unchanged = [w.path for s, w in zip(start, model.trainable_weights, strict=True)
                 if np.array_equal(s, w.numpy())]
    if len(unchanged) == len(start):
        raise Failure("one training step changed no trainable weight")
    return f"loss {loss:.4g}" + (f"; unchanged: {', '.join(unchanged)}" if unchanged else "")
