"""The models the package defines, with the parameter counts the documents print.

Each entry builds a fresh model for a given input shape; `spec-impl summary`, `spec-impl train`
and `spec-impl bench` all read this one table.
"""

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class ModelSpec:
    """One model of the package.

    Args:
        name: the name used on the command line.
        build: a callable `build(input_shape, num_classes)` returning a built Keras model.
        input_shape: the documented input shape, without the batch axis.
        documented: the documents' counts, `{"total": ..., "trainable": ..., "non_trainable": ...}`
            (only the keys a document prints).
        source: where the documented numbers come from.
        classifier: whether `spec-impl train` can train it on image classification data.
    """

    name: str
    build: Callable
    input_shape: tuple
    documented: dict = field(default_factory=dict)
    source: str = ""
    classifier: bool = True
    num_classes: Optional[int] = 10


MODELS: dict = {}


def register(spec):
    """Add `spec` to the table (once per name) and return it."""
    if spec.name in MODELS:
        raise ValueError(f"A model named {spec.name!r} is already registered.")
    MODELS[spec.name] = spec
    return spec


def get_model_spec(name):
    """Return the `ModelSpec` called `name`, or raise `ValueError` listing the valid names."""
    _load_all()
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}. Expected one of: {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def _load_all():
    """Import the modules whose import registers models."""
    import spec_impl  # noqa: F401  (the package root imports every model module)


def parameter_counts(model):
    """`{"total", "trainable", "non_trainable"}` parameter counts of a built model."""
    import numpy as np

    trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    non_trainable = int(sum(np.prod(w.shape) for w in model.non_trainable_weights))
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def summary_rows():
    """Build every registered model and compare its counts with the documented ones."""
    _load_all()
    rows = []
    for spec in MODELS.values():
        model = spec.build(spec.input_shape, spec.num_classes)
        counts = parameter_counts(model)
        rows.append((spec, counts))
    return rows


def format_summary(rows):
    """A plain-text table: model, input shape, counts, documented counts, agreement."""
    header = f"{'model':<22}{'input':<16}{'total':>11}{'trainable':>11}{'non-train':>11}  documented (source)"
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
            f"{spec.name:<22}{str(spec.input_shape):<16}{counts['total']:>11,}"
            f"{counts['trainable']:>11,}{counts['non_trainable']:>11,}  {doc_text}"
        )
    if not rows:
        lines.append("(no models registered)")
    return "\n".join(lines)
