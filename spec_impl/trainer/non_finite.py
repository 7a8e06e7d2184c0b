"""How a non-finite step is reported: the marker a step's loss carries, the message of the
in-graph check, and the errors and warnings the loop raises from the values the checks recorded
(`spec_impl.trainer.step_checks.StepChecks`)."""

import warnings

from spec_impl.saving import non_finite_weights
from spec_impl.trainer import keras_api

NON_FINITE = "spec_impl: non-finite loss"  # the message of the in-graph finiteness check
# The loss a step reports when its update made a weight non-finite although its loss and
# gradients were finite (a loss can be +inf, as log(0); -inf is what no usual loss reaches).
WEIGHTS_OVERFLOWED = float("-inf")


def _last_good(ckpt):
    """`"; the last good checkpoint is ..."` for a failure's message, or `""` without one."""
    latest = None if ckpt is None else ckpt.latest
    return f"; the last good checkpoint is {latest}" if latest else ""


def raise_non_finite(model, checks, epoch, step, loss, ckpt):
    """Raise `FloatingPointError` for the epoch's `step` (from 1) whose check stopped the run
    with `loss`: non-finite weights after an update that overflowed (it cannot be skipped, it
    has been applied), else the non-finite loss (after `checks.max_skipped` skipped steps under
    `on_nan="skip"`); names the last good checkpoint of `ckpt`, which nothing after it
    replaced."""
    where = _last_good(ckpt)
    weights = non_finite_weights(model) if loss == WEIGHTS_OVERFLOWED else None
    if weights:
        raise FloatingPointError(
            f"{weights} after epoch {epoch + 1}, step {step}: the optimizer's update "
            f"overflowed (check the learning rate and the optimizer's epsilon); training "
            f"stopped, no checkpoint written after it{where}")
    after = "" if checks.on_nan == "stop" else f" ({checks.max_skipped} consecutive steps skipped)"
    raise FloatingPointError(
        f"Non-finite loss {loss} at epoch {epoch + 1}, "
        f"step {step}{after}: training stopped, no checkpoint written after it{where}"
    ) from None


def warn_skipped(checks, before, epoch, offset):
    """Warn about the steps `on_nan="skip"` left out since `before` skipped steps in all;
    returns the new total. `offset` maps the step counter to the epoch's step."""
    now = int(checks.skipped.numpy())
    if now > before:
        last = offset + int(checks.last_skipped.numpy())
        warnings.warn(f"Skipped {now - before} step(s) with a non-finite loss or gradient "
                      f"in epoch {epoch + 1}, the last at step {last}: their updates were "
                      f"not applied and they are left out of the epoch's loss and metrics.",
                      RuntimeWarning, stacklevel=2)
    return now



def unless_all_skipped(model, logs, epoch):
    """An epoch's training `logs`, or none of them when `on_nan="skip"` left out every step it
    ran: its loss tracker then counted no sample, and the mean of nothing that Keras's metrics
    report (0.0, a perfect loss) would be kept as the best by `ModelCheckpoint` and
    `EarlyStopping`. No value is what `fit` reports for an epoch without batches; a callback
    that monitors the loss then warns that it is not available and keeps nothing (a NaN would
    be kept by `ModelCheckpoint(save_best_only=True)` in a run's first epoch, which Keras
    counts as an improvement whatever its value)."""
    if float(keras_api.loss_tracker(model).count.numpy()) > 0:
        return logs
    warnings.warn(f"Epoch {epoch + 1} trained on no batch: on_nan='skip' left out every step it "
                  f"ran, so it reports no {', '.join(logs)} (as fit reports an epoch without "
                  f"batches), not the 0.0 of an empty mean.", RuntimeWarning, stacklevel=3)
    return {}
