"""Classification report, ROC AUC (document 000's and the standard one), confusion matrix,
single-image prediction."""

import keras
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from spec_impl import evaluate_classifier, predict_one, roc_auc_document
from spec_impl.evaluation import probabilities
from spec_impl.testing import assert_allclose

Y = np.array([0, 1, 2, 2])
PROBS = np.array([[0.8, 0.1, 0.1],
                  [0.2, 0.7, 0.1],
                  [0.1, 0.6, 0.3],  # a 2 predicted as 1
                  [0.1, 0.2, 0.7]])
CONFUSION = [[1, 0, 0], [0, 1, 0], [0, 1, 1]]  # rows: true class, columns: predicted


class FixedModel:
    """Stands in for a model whose predictions are known exactly."""

    def __init__(self, outputs):
        self.outputs = np.asarray(outputs, dtype="float32")

    def predict(self, x, batch_size=None, verbose=0):
        return self.outputs[: len(x)]


def test_report_matrix_and_aucs(tmp_path):
    result = evaluate_classifier(FixedModel(PROBS), np.zeros((4, 1)), Y,
                                 class_names=["a", "b", "c"], out_dir=tmp_path)
    assert result["accuracy"] == 0.75
    assert result["confusion_matrix"].tolist() == CONFUSION
    assert result["report_dict"]["c"]["recall"] == 0.5
    assert result["report_dict"]["b"]["precision"] == 0.5
    assert "accuracy" in result["report"] and "c" in result["report"]
    assert result["roc_auc_ovr"] == pytest.approx(roc_auc_score(Y, PROBS, multi_class="ovr"))
    # Document 000's AUC, from one-hot *predicted labels*: class a 1.0, b (1 + 2/3) / 2, c 0.75.
    assert result["roc_auc_document"] == pytest.approx((1.0 + (1 + 2 / 3) / 2 + 0.75) / 3)
    assert result["roc_auc_document"] < result["roc_auc_ovr"]
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    report = (tmp_path / "report.txt").read_text()
    assert "ROC AUC (one-vs-rest, probabilities)" in report and "ROC AUC (document 000" in report


def test_logits_are_turned_into_probabilities():
    logits = np.log(PROBS) + 3.0  # same softmax
    assert_allclose(probabilities(logits), PROBS, atol=1e-6)
    assert_allclose(probabilities(PROBS), PROBS, atol=0, rtol=0)


def test_document_auc_function_on_perfect_predictions():
    assert roc_auc_document([0, 1, 2, 1], [0, 1, 2, 1]) == 1.0


def test_class_names_must_match_outputs():
    with pytest.raises(ValueError, match=r"Expected 3 class names for the model's 3 outputs. "
                                         r"Received 2: \['a', 'b'\]"):
        evaluate_classifier(FixedModel(PROBS), np.zeros((4, 1)), Y, class_names=["a", "b"])


def test_predict_one_with_a_real_model():
    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    model.layers[-1].set_weights([np.zeros((4, 3)), np.log(np.array([0.2, 0.5, 0.3]))])
    name, prob = predict_one(model, np.ones((2, 2, 1)), ["cat", "dog", "frog"])
    assert name == "dog" and prob == pytest.approx(0.5, rel=1e-5)


def test_a_one_column_sigmoid_model_is_evaluated_as_two_classes():
    # Classifier(2)'s output: one sigmoid column, the probability of class 1
    p = np.array([[0.9], [0.2], [0.6], [0.4]])
    y = np.array([1, 0, 0, 1])
    result = evaluate_classifier(FixedModel(p), np.zeros((4, 1)), y, class_names=["no", "yes"])
    assert_allclose(result["probabilities"], np.c_[1 - p, p], rtol=1e-7)
    assert result["y_pred"].tolist() == [1, 0, 1, 0]
    assert result["accuracy"] == 0.5
    assert result["confusion_matrix"].tolist() == [[1, 1], [1, 1]]
    assert result["roc_auc_ovr"] == roc_auc_score(y, p[:, 0]) == 0.75


def test_one_column_logits_go_through_a_sigmoid():
    logits = np.array([[2.0], [-1.0]])
    assert_allclose(probabilities(logits)[:, 1], 1 / (1 + np.exp(-logits[:, 0])), rtol=1e-7)
