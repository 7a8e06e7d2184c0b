"""The specification's contract for your own layers, models, losses and metrics.

`check_component(make, inputs)` runs every check that applies to what `make()` returns and gives
a `Report`: one `Result` per check, `ok`, `warning` (what Keras only warns about, blocking
nothing), `FAILED` (with the cause and the fix) or `skipped` (with why). The same checks run
behind `spec-impl check MODULE:FACTORY`, the pytest plugin's `keras_contract` marker and the
package's own `spec_impl.testing.run_layer_test`; `docs/check.md` explains each.
"""

from spec_impl.contract import layer_checks, loss_metric_checks, numeric_checks, saving_checks  # noqa: F401
from spec_impl.contract.card import format_report
from spec_impl.contract.component import BATCH, Context, generate, generate_targets, load_target
from spec_impl.contract.core import (
    FAILED,
    KINDS,
    OK,
    PENDING,
    SKIPPED,
    WARNING,
    Report,
    Result,
    checks_for,
    run_checks,
)
from spec_impl.contract.facts import TARGETS, InputsError

__all__ = ["BATCH", "FAILED", "KINDS", "OK", "PENDING", "SKIPPED", "TARGETS", "WARNING",
           "InputsError", "Report", "Result", "check_component", "check_names", "format_report",
           "generate", "generate_targets", "load_target"]


def check_names(kind):
    """The names of the checks a component of `kind` goes through, in order."""
    return [c.name for c in checks_for(kind)]


def check_component(make, inputs, *, kind=None, expect=None, target=None, label=None, only=None,
                    skip=(), train_target=None, loss="mse", targets=None, deferred=None,
                    folder=None):
    """Run the contract on the component `make()` returns.

    Args:
        make: a callable returning a fresh component (a layer class, a factory function, or
            `lambda **kw: MyLayer(3, **kw)`; when it takes `dtype=`, the dtype checks pass it).
        inputs: what the component is called on: an array, a list of arrays (several positional
            arguments of `call`, or one argument that takes a list, as `call`'s signature says),
            a dict (of `call`'s argument names, or of a model's input names); for a loss or
            metric, `(y_true, y_pred)` (`generate_targets` makes them). `generate(shapes)`
            makes them from per-example shapes. A layer's inputs need `BATCH` (4) examples, so
            that two replicas get two each.
        kind: `"layer"`, `"model"`, `"loss"` or `"metric"`; by default, what `make()` returns.
        expect: expected counts: `trainable_weights`, `non_trainable_weights`, `params`,
            `seed_generators`, `losses`; `output_shape` (without the batch axis; a list for
            several outputs); `float32_layers` (layers that compute in float32 under a mixed
            policy: a model's output layers, by default one per output of a model).
        target: `"module:factory"` naming `make` for the fresh-process check; found from `make`
            when it is a module-level function or class.
        label: the component's name in the report.
        only, skip: check names to run alone, or to report as skipped.
        train_target, loss: the targets and loss of the training step (N(0, 1) values shaped
            like the outputs and mean squared error by default; a compiled model keeps its own
            loss).
        targets: for a loss or metric, the kind of targets its inputs are
            (`spec_impl.contract.facts.TARGETS`); by default, what its name declares.
        deferred: a list to queue the fresh-process reload in (its result is then `pending`;
            `spec_impl.contract.sweep.run_deferred` runs many in one process), or `None` to run it.
        folder: where saved files go (a temporary folder by default; a queued reload needs
            its files until it runs).

    Returns:
        A `Report`; `report.ok` is False when a check failed, or when every check but
        `construct` was skipped.

    Raises:
        spec_impl.contract.facts.InputsError: the inputs do not fit the component's `call`.
    """
    ctx = Context(make, inputs, kind=kind, target=target, expect=expect, label=label,
                  train_target=train_target, loss=loss, targets=targets)
    ctx.deferred = deferred
    try:
        ctx.kind  # noqa: B018  (makes the component once to find its kind)
    except Exception as error:
        from spec_impl.contract.core import first_line

        return Report(ctx.label, kind or "unknown", (Result(
            "construct", FAILED, cause=f"the factory raised {first_line(error)}",
            fix="make the factory callable without arguments"),))
    try:
        ctx.facts  # noqa: B018  (reads the declarations; refuses inputs that do not fit `call`)
    except InputsError:
        raise
    except Exception:
        pass  # the checks report the component's own error, `construct` first
    return run_checks(ctx, only=only, skip=skip, folder=folder)
