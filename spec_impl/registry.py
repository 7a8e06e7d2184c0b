"""The models the package defines, with the parameter counts the documents print.

Each entry builds a fresh model for a given input shape; `spec-impl summary`, `spec-impl train`
and `spec-impl bench` all read this one table.
"""

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from spec_impl import cnn, deep_dive, inception, regressors


@dataclass(frozen=True)
class ModelSpec:
    """One model of the package.

    Args:
        name: the name used on the command line.
        build: a callable `build(input_shape, num_classes)` returning a built Keras model.
        input_shape: the documented input shape, without the batch axis.
        documented: the documents' counts, `{"total": ..., "trainable": ..., "non_trainable": ...}`
            (only the keys a document gives).
        source: where the documented numbers come from.
        classifier: whether `spec-impl train` can train it on image classification data.
        from_logits: whether the model returns logits (else probabilities).
        num_classes: the default number of classes.
        loss: the loss it trains with (one per output for several outputs); `None` for the sparse
            categorical cross-entropy of its classes (`training_loss`).
    """

    name: str
    build: Callable
    input_shape: tuple
    documented: dict = field(default_factory=dict)
    source: str = ""
    classifier: bool = True
    from_logits: bool = False
    num_classes: int | None = 10
    loss: object = None

    def training_loss(self):
        """The loss `spec-impl train` and `spec-impl bench` train this model with."""
        if self.loss is not None:
            return self.loss
        return keras.losses.SparseCategoricalCrossentropy(from_logits=self.from_logits)


def _built(model_cls, input_shape, num_classes):
    model = model_cls(num_classes)
    model.build((None, *input_shape))
    return model


def _default_specs():
    """Every model of the package."""
    cnn_doc = {"total": 20_426, "non_trainable": 192}
    cnn_src = "doc 000 layer sizes at 28x28x3"
    ticket = lambda shape, n: deep_dive.ticket_classifier()  # noqa: E731  (a table of one-liners)
    ticket_loss = ["mean_squared_error", "categorical_crossentropy"]  # doc 002: priority, department
    return [
        ModelSpec("sequential_cnn", lambda s, n: cnn.sequential_cnn(s, n), (28, 28, 3), cnn_doc,
                  cnn_src, from_logits=True),
        ModelSpec("functional_cnn", lambda s, n: cnn.functional_cnn(s, n), (28, 28, 3), cnn_doc,
                  cnn_src, from_logits=True),
        ModelSpec("subclassed_cnn", lambda s, n: cnn.subclassed_cnn(s, n), (28, 28, 3), cnn_doc,
                  cnn_src, from_logits=True),
        ModelSpec("mini_inception", lambda s, n: _built(inception.MiniInception, s, n), (32, 32, 3),
                  {"total": 1_656_250, "trainable": 1_652_826, "non_trainable": 3_424},
                  "doc 000 summary"),
        ModelSpec("inception_model", lambda s, n: _built(inception.InceptionModel, s, n),
                  (28, 28, 1), {}, "doc 001 prints no counts"),
        ModelSpec("mnist_mlp", lambda s, n: deep_dive.get_mnist_model(s[0], n), (784,),
                  {"total": 407_050}, "doc 002 layer sizes"),
        ModelSpec("my_example_model", lambda s, n: deep_dive.my_example_model(), (3,),
                  {"total": 906, "trainable": 906, "non_trainable": 0}, "doc 002 summary",
                  classifier=False),
        ModelSpec("ticket_classifier", ticket, (10_000,), {"total": 1_286_789},
                  "doc 002 layer sizes", classifier=False, loss=ticket_loss),
        ModelSpec("ticket_with_difficulty", lambda s, n: deep_dive.add_difficulty_head(ticket(s, n)),
                  (10_000,), {"total": 1_286_984}, "doc 002 layer sizes", classifier=False,
                  loss=[*ticket_loss, "categorical_crossentropy"]),
        ModelSpec("customer_ticket_model", _customer_ticket_model, (10_000,),
                  {"total": 1_286_789}, "doc 002 layer sizes", classifier=False, loss=ticket_loss),
        ModelSpec("residual_regressor", lambda s, n: _built(regressors.ResidualRegressor, s, 1),
                  (5,), {}, "doc 003 prints no counts", classifier=False, num_classes=1, loss="mse"),
        ModelSpec("reconstruction_regressor", _reconstruction_regressor, (3,), {},
                  "doc 003 prints no counts", classifier=False, num_classes=1, loss="mse"),
    ]


def _customer_ticket_model(input_shape, num_classes):
    model = deep_dive.CustomerTicketModel(num_departments=4)
    model.build({"title": (None, 10_000), "text_body": (None, 10_000), "tags": (None, 100)})
    return model


def _reconstruction_regressor(input_shape, num_classes):
    model = regressors.ReconstructionRegressor(1)
    model.build((None, *input_shape))
    return model


MODELS = {spec.name: spec for spec in _default_specs()}


def get_model_spec(name):
    """Return the `ModelSpec` called `name`, or raise `ValueError` listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Expected one of: {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def classifier_names():
    """Names of the models `spec-impl train` can train on image data."""
    return [name for name, spec in MODELS.items() if spec.classifier]


def parameter_counts(model):
    """`{"total", "trainable", "non_trainable"}` parameter counts of a built model."""
    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def summary_rows():
    """Build every registered model and compare its counts with the documented ones."""
    rows = []
    for spec in MODELS.values():
        model = spec.build(spec.input_shape, spec.num_classes)
        counts = parameter_counts(model)
        rows.append((spec, counts))
    return rows


def format_summary(rows):
    """A plain-text table: model, input shape, counts, documented counts, agreement."""
    header = f"{'model':<26}{'input':<16}{'total':>11}{'trainable':>11}{'non-train':>11}  documented (source)"
    lines = [header, "-" * len(header)]
    for spec, counts in rows:
        doc = spec.documented
        if doc:
            agree = all(counts[k] == v for k, v in doc.items())
            doc_text = ", ".join(f"{k}={v:,}" for k, v in doc.items())
            doc_text = f"{'OK ' if agree else 'DIFF '}{doc_text} ({spec.source})"
        else:
            doc_text = "not printed by the documents"
        lines.append(
            f"{spec.name:<26}{str(spec.input_shape):<16}{counts['total']:>11,}"
            f"{counts['trainable']:>11,}{counts['non_trainable']:>11,}  {doc_text}"
        )
    if not rows:
        lines.append("(no models registered)")
    return "\n".join(lines)
