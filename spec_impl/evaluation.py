"""Evaluation as document 000 ends: classification report, ROC AUC, confusion matrix, and a
prediction for one image."""

import os

import numpy as np
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, roc_auc_score
from sklearn.preprocessing import LabelBinarizer

from spec_impl._plot import new_figure
from spec_impl.saving import save_figure_atomic, write_atomic_text


def probabilities(outputs):
    """Class probabilities `(n, classes)` from a classifier's outputs.

    Several columns: the softmax of `outputs` unless they already are probabilities (rows in
    [0, 1] summing to 1). One column (a binary classifier): two classes, `[1 - p, p]`, with `p`
    the column itself if it lies in [0, 1] (a sigmoid output), else its sigmoid (logits).
    """
    outputs = np.asarray(outputs, dtype="float64")
    if outputs.ndim == 1:
        outputs = outputs[:, None]
    if outputs.shape[1] == 1:
        p = outputs[:, 0]
        if p.min() < 0 or p.max() > 1:
            p = 1 / (1 + np.exp(-p))
        return np.stack([1 - p, p], axis=1)
    if outputs.min() >= 0 and outputs.max() <= 1 and np.allclose(outputs.sum(axis=1), 1, atol=1e-3):
        return outputs
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def roc_auc_document(y_true, y_pred, average="macro"):
    """Document 000's multiclass ROC AUC: from *binarized predicted labels*, not probabilities.

    It scores hard decisions, so it ignores the model's confidence and is usually lower than
    the standard one-vs-rest AUC computed from probabilities.
    """
    binarizer = LabelBinarizer().fit(y_true)
    return float(roc_auc_score(binarizer.transform(y_true), binarizer.transform(y_pred),
                               average=average))


def evaluate_classifier(model, x, y, class_names=None, out_dir=None, batch_size=256):
    """Predict `x` and score the predictions against integer labels `y`.

    Args:
        model: a classifier returning probabilities or logits.
        x: inputs.
        y: integer class ids, shape `(n,)`.
        class_names: names for the report (class ids by default).
        out_dir: if given, `confusion_matrix.png` (a heatmap) and `report.txt` are written there.
        batch_size: prediction batch size.

    Returns:
        A dict with `accuracy`, `report` (text), `report_dict`, `confusion_matrix`,
        `roc_auc_ovr` (standard, from probabilities), `roc_auc_document` (document 000's),
        `y_pred` and `probabilities`.
    """
    y = np.asarray(y).reshape(-1)
    probs = probabilities(model.predict(x, batch_size=batch_size, verbose=0))
    n_classes = probs.shape[1]
    if class_names is None:
        class_names = [str(i) for i in range(n_classes)]
    if len(class_names) != n_classes:
        raise ValueError(f"Expected {n_classes} class names for the model's {n_classes} outputs. "
                         f"Received {len(class_names)}: {list(class_names)}")
    y_pred = probs.argmax(axis=1)
    labels = list(range(n_classes))
    result = {
        "accuracy": float(accuracy_score(y, y_pred)),
        "report": classification_report(y, y_pred, labels=labels, target_names=list(class_names),
                                        zero_division=0),
        "report_dict": classification_report(y, y_pred, labels=labels,
                                             target_names=list(class_names), zero_division=0,
                                             output_dict=True),
        "confusion_matrix": confusion_matrix(y, y_pred, labels=labels),
        # scikit-learn takes the positive class's scores alone for two classes
        "roc_auc_ovr": float(roc_auc_score(y, probs[:, 1]) if n_classes == 2 else
                             roc_auc_score(y, probs, multi_class="ovr", labels=labels)),
        "roc_auc_document": roc_auc_document(y, y_pred),
        "y_pred": y_pred,
        "probabilities": probs,
    }
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_atomic_text(os.path.join(out_dir, "report.txt"),
                          result["report"]
                          + f"\nROC AUC (one-vs-rest, probabilities): {result['roc_auc_ovr']:.4f}\n"
                          + f"ROC AUC (document 000, binarized labels): "
                            f"{result['roc_auc_document']:.4f}\n")
        plot_confusion_matrix(result["confusion_matrix"], class_names,
                              os.path.join(out_dir, "confusion_matrix.png"))
    return result


def plot_confusion_matrix(matrix, class_names, path):
    """A heatmap of `matrix` with counts written in each cell, saved as a PNG."""
    n = len(class_names)
    figure = new_figure((max(5, 0.6 * n + 2), max(4, 0.6 * n + 1)))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(n), labels=class_names, rotation=45, ha="right")
    axes.set_yticks(range(n), labels=class_names)
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            axes.text(j, i, str(matrix[i, j]), ha="center", va="center",
                      color="white" if matrix[i, j] > threshold else "black", fontsize=8)
    figure.tight_layout()
    save_figure_atomic(figure, path)
    return path


def predict_one(model, image, class_names):
    """Class name and probability for a single image of shape `model`'s input (no batch axis)."""
    image = np.asarray(image, dtype="float32")
    probs = probabilities(model.predict(image[None, ...], verbose=0))[0]
    index = int(probs.argmax())
    return class_names[index], float(probs[index])
