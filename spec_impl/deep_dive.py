"""The models of document 002, "Working with Keras: a deep dive".

A named incremental Sequential model, the multi-input / multi-output ticket classifier and its
feature-extraction extension, the same classifier as a subclassed model, a `Classifier` usable
inside a Functional model, and the MNIST MLP used for the built-in loops.
"""

import copy

import keras
from keras import layers

from spec_impl._base import inner, outer, serializable
from spec_impl._validation import check_positive_int
from spec_impl.precision import output_dtype

TICKET_INPUTS = ("title", "text_body", "tags")


def my_example_model():
    """Document 002's named Sequential model, built for `(None, 3)` inputs (906 parameters)."""
    model = keras.Sequential(name="my_example_model")
    model.add(layers.Dense(64, activation="relu", name="my_first_layer"))
    model.add(layers.Dense(10, activation="softmax", name="my_last_layer", dtype=output_dtype()))
    model.build((None, 3))
    return model


def ticket_classifier(vocabulary_size=10000, num_tags=100, num_departments=4):
    """The multi-input, multi-output ticket classifier (1,286,789 parameters by default).

    Inputs `title` (vocabulary_size,), `text_body` (vocabulary_size,), `tags` (num_tags,) are
    concatenated and mixed by a Dense(64, relu) layer named `features`; the outputs are
    `priority` (1 unit, sigmoid) and `department` (num_departments units, softmax).
    """
    for name, value in (("vocabulary_size", vocabulary_size), ("num_tags", num_tags),
                        ("num_departments", num_departments)):
        check_positive_int(name, value)
    title = keras.Input(shape=(vocabulary_size,), name="title")
    text_body = keras.Input(shape=(vocabulary_size,), name="text_body")
    tags = keras.Input(shape=(num_tags,), name="tags")
    features = layers.Concatenate(name="concatenate")([title, text_body, tags])
    features = layers.Dense(64, activation="relu", name="features")(features)  # (batch, 64)
    priority = layers.Dense(1, activation="sigmoid", name="priority", dtype=output_dtype())(features)
    department = layers.Dense(num_departments, activation="softmax", name="department",
                              dtype=output_dtype())(features)
    return keras.Model(inputs=[title, text_body, tags], outputs=[priority, department],
                       name="ticket_classifier")


def add_difficulty_head(model, num_levels=3):
    """Feature extraction: a new `difficulty` output reading the classifier's Dense(64) features.

    The new model shares every layer (and so every weight) with `model`; it has
    `64 * num_levels + num_levels` more parameters (1,286,984 in all by default).
    """
    check_positive_int("num_levels", num_levels)
    features = model.get_layer("features").output
    difficulty = layers.Dense(num_levels, activation="softmax", name="difficulty",
                              dtype=output_dtype())(features)
    return keras.Model(inputs=model.inputs, outputs=[*model.outputs, difficulty],
                       name="ticket_classifier_with_difficulty")


@serializable
class CustomerTicketModel(keras.Model):
    """The ticket classifier as a subclassed model taking a dict of inputs.

    Args:
        num_departments: number of department classes.

    Input shape:
        a dict with keys `title`, `text_body`, `tags`, each `(batch, features)`.

    Output shape:
        `(priority (batch, 1), department (batch, num_departments))`.
    """

    def __init__(self, num_departments=4, **kwargs):
        super().__init__(**kwargs)
        self.num_departments = check_positive_int("num_departments", num_departments)
        self.concat_layer = layers.Concatenate(**inner(self))
        self.mixing_layer = layers.Dense(64, activation="relu", **inner(self))
        self.priority_scorer = layers.Dense(1, activation="sigmoid", **outer(self))
        self.department_classifier = layers.Dense(num_departments, activation="softmax",
                                                  **outer(self))

    @staticmethod
    def _check_keys(inputs):
        if not isinstance(inputs, dict) or any(k not in inputs for k in TICKET_INPUTS):
            received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
            missing = [k for k in TICKET_INPUTS if not isinstance(inputs, dict) or k not in inputs]
            raise ValueError(
                f"Expected a dict with keys {list(TICKET_INPUTS)}. Missing: {missing}; "
                f"received: {received}"
            )

    def build(self, input_shape):
        self._check_keys(input_shape)
        width = sum(int(input_shape[k][-1]) for k in TICKET_INPUTS)
        self.mixing_layer.build((None, width))
        self.priority_scorer.build((None, 64))
        self.department_classifier.build((None, 64))
        self.built = True

    def call(self, inputs):
        self._check_keys(inputs)
        features = self.concat_layer([inputs[k] for k in TICKET_INPUTS])
        features = self.mixing_layer(features)  # (batch, 64)
        return self.priority_scorer(features), self.department_classifier(features)

    def get_config(self):
        return {**super().get_config(), "num_departments": self.num_departments}


@serializable
class Classifier(keras.Model):
    """One sigmoid unit for 2 classes, otherwise `num_classes` softmax units.

    Args:
        num_classes: number of classes, at least 2: 2 gives one sigmoid unit, more give that
            many softmax units.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, 1)` for 2 classes, else `(batch, num_classes)`.
    """

    def __init__(self, num_classes=2, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("num_classes", num_classes)
        if num_classes < 2:
            raise ValueError(f"Expected at least 2 classes. Received: num_classes={num_classes}")
        self.num_classes = num_classes
        if num_classes == 2:
            self.dense = layers.Dense(1, activation="sigmoid", **outer(self))
        else:
            self.dense = layers.Dense(num_classes, activation="softmax", **outer(self))

    def call(self, inputs):
        return self.dense(inputs)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def binary_classifier(input_dim=64, dtype=None):
    """A Functional binary classifier: `(batch, input_dim)` -> Dense(1, sigmoid), `input_dim + 1`
    parameters; its output layer computes in float32 under a mixed `dtype`. Its input takes the
    output layer's dtype, so that under float64 a model holding it keeps float64 throughout."""
    check_positive_int("input_dim", input_dim)
    inputs = keras.Input(shape=(input_dim,), dtype=output_dtype(dtype))
    outputs = layers.Dense(1, activation="sigmoid", dtype=output_dtype(dtype))(inputs)
    return keras.Model(inputs, outputs, name="binary_classifier")


@serializable
class FunctionalHeadModel(keras.Model):
    """The other direction of mixing the APIs: a subclassed model that uses a Functional model
    as a sub-model (document 002 composes a Functional model around the subclassed `Classifier`;
    its chapter also shows this one). Dense(64, relu) -> `binary_classifier(64)`: 321 parameters
    on 3 features.

    Args:
        units: width of the hidden layer (the Functional classifier's input).
        classifier: the Functional sub-model (default: `binary_classifier(units)`); restored from
            its own config on reload.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, 1)`: the probability of the positive class.
    """

    def __init__(self, units=64, classifier=None, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.dense = layers.Dense(units, activation="relu", **inner(self))
        if isinstance(classifier, dict):  # from get_config (deserializing consumes the dict)
            classifier = keras.saving.deserialize_keras_object(copy.deepcopy(classifier))
        self.classifier = classifier or binary_classifier(units, dtype=self.dtype_policy)

    def call(self, inputs):
        return self.classifier(self.dense(inputs))

    def get_config(self):
        return {**super().get_config(), "units": self.units,
                "classifier": keras.saving.serialize_keras_object(self.classifier)}


def get_mnist_model(input_dim=28 * 28, num_classes=10, dropout=0.5):
    """784 -> Dense(512, relu) -> Dropout(0.5) -> Dense(10, softmax): 407,050 parameters.

    `dropout=0` leaves the `Dropout` layer out (a deterministic model, for comparing runs).
    """
    check_positive_int("input_dim", input_dim)
    check_positive_int("num_classes", num_classes)
    if not 0 <= dropout < 1:
        raise ValueError(f"Expected `dropout` in [0, 1). Received: dropout={dropout!r}")
    inputs = keras.Input(shape=(input_dim,))
    features = layers.Dense(512, activation="relu")(inputs)
    if dropout:
        features = layers.Dropout(dropout)(features)
    outputs = layers.Dense(num_classes, activation="softmax", dtype=output_dtype())(features)
    return keras.Model(inputs, outputs, name="mnist_mlp")
