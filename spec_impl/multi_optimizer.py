"""A training step with one optimizer per group of layers (the chapter's exercise).

One forward pass under a persistent `GradientTape`, then one `tape.gradient` call and one
optimizer per group: e.g. a small learning rate for pretrained lower layers and a larger one
for a new head.
"""

import tensorflow as tf


def check_groups(model, groups):
    """Raise `ValueError` unless `groups` (`[(variables, optimizer), ...]`) share no variable and
    together hold every trainable variable of `model`."""
    seen = {}
    for index, (variables, _) in enumerate(groups):
        for v in variables:
            if id(v) in seen:
                raise ValueError(f"The variable {v.path!r} is in groups {seen[id(v)]} and {index}; "
                                 f"each variable belongs to one optimizer.")
            seen[id(v)] = index
    missing = [v.path for v in model.trainable_variables if id(v) not in seen]
    if missing:
        raise ValueError(f"Trainable variables in no group (they would never be updated): "
                         f"{', '.join(missing)}")


def multi_optimizer_step(model, loss_fn, x, y, groups):
    """One training step; each `(variables, optimizer)` group updated by its own optimizer.

    Args:
        model: a built Keras model.
        loss_fn: `loss_fn(y_true, y_pred)`; `model.losses` are added.
        x, y: one batch.
        groups: `[(variables, optimizer), ...]`, a partition of `model.trainable_variables`.

    Returns:
        The loss (a scalar tensor).

    Raises:
        ValueError: the groups share a variable or leave a trainable variable out.
    """
    check_groups(model, groups)
    with tf.GradientTape(persistent=True) as tape:  # several gradient calls on one pass
        loss = loss_fn(y, model(x, training=True))
        if model.losses:
            loss = loss + tf.add_n(model.losses)
    for variables, optimizer in groups:
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))
    del tape  # a persistent tape holds its resources until deleted
    return loss
