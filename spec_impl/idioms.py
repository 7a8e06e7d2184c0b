"""The documents' Keras-2 idioms, run on both Kerases: a measured compatibility matrix.

Each `Idiom` is a small self-contained snippet, the same text on both sides, run with `keras`
bound to `tf.keras`: Keras 3 in this process, and tf-keras (the Keras 2 line, `pip install
tf-keras`) in a child process started with `TF_USE_LEGACY_KERAS=1`. What is recorded is what
happened: the value the snippet left in `result` (or `None`), the warnings it raised, or the
exception type and the first line of its message. `spec-impl idioms` prints the matrix.
"""

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import warnings
from dataclasses import dataclass

LEGACY_INSTALL = 'pip install -e ".[legacy]"  (tf-keras)'
LEGACY_TIMEOUT = 600  # seconds for the child process that runs the tf-keras side


@dataclass(frozen=True)
class Idiom:
    """A documented Keras-2 idiom.

    Attributes:
        name: short name (the matrix's first column).
        document: where the documents use it (`"000"` ... `"004"`).
        code: the snippet. It runs with `keras` (`tf.keras`), `tf`, `np`, `os` and `tmp` (a fresh
            folder) in scope and may set `result` to the value that matters.
        instead: what to write on Keras 3.
    """

    name: str
    document: str
    code: str
    instead: str


_SEQUENTIAL = "model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])\n"

IDIOMS = (
    Idiom("save_format_tf", "000", _SEQUENTIAL + 'model.save(f"{tmp}/net", save_format="tf")\n'
          'result = sorted(os.listdir(f"{tmp}/net"))[:2]',
          'model.save("net.keras"), or model.export("net") for a SavedModel'),
    Idiom("save_to_folder", "001", _SEQUENTIAL + 'model.save(f"{tmp}/net")\n'
          'result = "saved_model.pb" in os.listdir(f"{tmp}/net")',
          'model.save("net.keras")'),
    Idiom("save_weights_h5", "003", _SEQUENTIAL + 'model.save_weights(f"{tmp}/net.h5")\n'
          'result = os.path.exists(f"{tmp}/net.h5")',
          'model.save_weights("net.weights.h5")'),
    Idiom("load_weights_unbuilt_subclassed", "003", textwrap.dedent("""\
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2)
            def call(self, x):
                return self.dense(x)
        saved = Net()
        saved(np.ones((1, 3), "float32"))
        saved.save_weights(f"{tmp}/net.weights.h5")
        fresh = Net()
        fresh.load_weights(f"{tmp}/net.weights.h5")
        result = len(fresh.weights)"""),
          "model.build((None, 3)) (or call it once) before load_weights"),
    Idiom("metric_reset_states", "002", textwrap.dedent("""\
        metric = keras.metrics.Mean()
        metric.update_state([4.0])
        metric.reset_states()
        result = float(metric.result())"""),
          "metric.reset_state()"),
    Idiom("input_layer_int_shape", "003", "layer = keras.layers.InputLayer(5)\n"
          "result = list(layer.output.shape) if hasattr(layer, 'output') else None",
          "keras.Input(shape=(5,))"),
    Idiom("l2_keyword_l", "003", "regularizer = keras.regularizers.l2(l=0.05)\n"
          "result = round(float(regularizer.l2), 4)",
          "keras.regularizers.l2(0.05)"),
    Idiom("add_metric", "003", textwrap.dedent("""\
        class Layer(keras.layers.Layer):
            def call(self, x):
                self.add_metric(tf.reduce_mean(x), name="mean")
                return x
        inputs = keras.Input((2,))
        model = keras.Model(inputs, Layer()(inputs))
        result = [m.name for m in model.metrics]"""),
          "a keras.metrics.Mean attribute updated in call (reported by fit)"),
    Idiom("input_shape_then_build", "003", textwrap.dedent("""\
        model = keras.Sequential([keras.layers.Dense(2, input_shape=(10,))])
        model.build((None, 3))
        result = list(model.layers[0].kernel.shape)"""),
          "keras.Input(shape=...) first, and no build with another shape"),
    Idiom("h5_unregistered_loss", "003", textwrap.dedent("""\
        def my_loss(y_true, y_pred):
            return tf.reduce_mean(tf.square(y_true - y_pred))
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile("sgd", loss=my_loss)
        model.save(f"{tmp}/m.h5")
        keras.models.load_model(f"{tmp}/m.h5")"""),
          "custom_objects={'my_loss': my_loss}, or .keras with register_keras_serializable"),
    Idiom("lambda_in_saved_file", "003", textwrap.dedent("""\
        model = keras.Sequential([keras.Input((2,)), keras.layers.Lambda(lambda x: tf.exp(x))])
        model.save(f"{tmp}/m.keras")
        keras.models.load_model(f"{tmp}/m.keras")"""),
          "a small serializable layer (spec_impl.Exponential)"),
    Idiom("sublayers_in_list_checkpoint", "003", textwrap.dedent("""\
        class Net(keras.layers.Layer):
            def __init__(self):
                super().__init__()
                self.blocks = [keras.layers.Dense(2) for _ in range(2)]
            def call(self, x):
                for block in self.blocks:
                    x = block(x)
                return x
        net = Net()
        net(np.ones((1, 2), "float32"))
        path = tf.train.Checkpoint(net=net).write(f"{tmp}/ckpt")
        result = len([n for n, _ in tf.train.list_variables(path) if "kernel" in n])"""),
          "sub-layers as attributes (self.block_0 = ...), or checkpoint their variables"),
    Idiom("zero_batch_build_call", "000", textwrap.dedent("""\
        class Net(keras.Model):
            def __init__(self):
                super().__init__()
                self.conv = keras.layers.Conv2D(8, 3, padding="same")
                self.pool = keras.layers.GlobalAveragePooling2D()
                self.out = keras.layers.Dense(10)
            def call(self, x):
                return self.out(self.pool(self.conv(x)))
        net = Net()
        y = net(tf.ones(shape=(0, 32, 32, 3)))
        result = [list(y.shape), len(net.weights)]"""),
          "model.build((None, 32, 32, 3)), or a call on one real sample"),
    Idiom("categorical_crossentropy_on_logits", "000", textwrap.dedent("""\
        logits = tf.constant([[2.0, -1.0, 0.5]])
        labels = tf.constant([[1.0, 0.0, 0.0]])
        wrong = keras.losses.CategoricalCrossentropy()(labels, logits)
        right = keras.losses.CategoricalCrossentropy(from_logits=True)(labels, logits)
        result = [round(float(wrong), 4), round(float(right), 4)]"""),
          "CategoricalCrossentropy(from_logits=True) (or a softmax output)"),
)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FUNCTION_NODE = re.compile(r"^\{\{function_node [^}]*\}\}\s*")


def first_line(text):
    """The first informative line of a message: Keras's 'Exception encountered when calling
    ...' header, terminal colour codes and TensorFlow's `{{function_node ...}}` are skipped."""
    for line in _ANSI.sub("", str(text)).splitlines():
        line = _FUNCTION_NODE.sub("", line.strip())
        if line and not line.startswith("Exception encountered when calling"):
            return line
    return ""


def run_idiom(idiom):
    """Run `idiom` here; returns `{"raised": "Type: first line" | None, "result": ...,
    "warnings": ["Type: first line", ...]}` (the result as JSON-able text)."""
    import numpy as np
    import tensorflow as tf

    absl = logging.getLogger("absl")  # tf.keras's "HDF5 is legacy" notes: not the outcome
    level = absl.level
    absl.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scope = {"keras": tf.keras, "tf": tf, "np": np, "os": os, "tmp": tmp}
        raised = None
        try:
            exec(compile(idiom.code, f"<idiom {idiom.name}>", "exec"), scope)
        except Exception as error:  # the outcome is recorded, whatever it is
            raised = f"{type(error).__name__}: {first_line(error)}"
    absl.setLevel(level)
    seen = [f"{w.category.__name__}: {first_line(w.message)}" for w in caught
            if not issubclass(w.category, DeprecationWarning)]
    result = scope.get("result")
    return {"raised": raised, "result": None if raised else json.loads(json.dumps(result, default=str)),
            "warnings": list(dict.fromkeys(seen))}


def versions():
    """TensorFlow's version and that of the Keras behind `tf.keras` in this process."""
    from importlib.metadata import version

    import tensorflow as tf

    legacy = os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    return {"tensorflow": tf.__version__, "keras": version("tf-keras" if legacy else "keras")}


def run_all():
    """`{"versions": ..., "outcomes": {name: outcome}}` for this process's Keras."""
    return {"versions": versions(), "outcomes": {i.name: run_idiom(i) for i in IDIOMS}}


def legacy_installed():
    from importlib.util import find_spec

    return find_spec("tf_keras") is not None


def run_legacy():
    """`run_all()` under tf-keras, in a child process (`TF_USE_LEGACY_KERAS=1`), or `None` when
    tf-keras is not installed."""
    if not legacy_installed():
        return None
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-m", "spec_impl.idioms"], capture_output=True,
                          text=True, env=env, timeout=LEGACY_TIMEOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"the tf-keras run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def describe(outcome):
    """One cell: `raises Type: message`, or `returns <result>` with any warnings."""
    if outcome is None:
        return f"not installed: {LEGACY_INSTALL}"
    if outcome["raised"]:
        return "raises " + outcome["raised"]
    text = "returns " + json.dumps(outcome["result"])
    if outcome["warnings"]:
        text += "; warns " + "; ".join(outcome["warnings"])
    return text


def matrix():
    """Both sides: `{"versions": {...}, "rows": [{"idiom", "document", "keras3", "tf_keras",
    "instead"}]}` (`tf_keras` cells `None` without tf-keras)."""
    here = run_all()
    legacy = run_legacy()
    rows = [{"idiom": i.name, "document": i.document, "keras3": here["outcomes"][i.name],
             "tf_keras": None if legacy is None else legacy["outcomes"][i.name],
             "instead": i.instead} for i in IDIOMS]
    return {"versions": {"tensorflow": here["versions"]["tensorflow"],
                         "keras": here["versions"]["keras"],
                         "tf_keras": None if legacy is None else legacy["versions"]["keras"]},
            "rows": rows}


def _cell(text, width=110):
    text = text.replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def format_matrix(result):
    """The matrix as a Markdown table with the versions in its header."""
    v = result["versions"]
    lines = [f"TensorFlow {v['tensorflow']}, Keras {v['keras']}, tf-keras "
             f"{v['tf_keras'] or 'not installed'}", "",
             "| idiom | document | Keras 3 | tf-keras | write instead |",
             "| --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| `{r['idiom']}` | {r['document']} | {_cell(describe(r['keras3']))} | "
                     f"{_cell(describe(r['tf_keras']))} | {r['instead']} |")
    return "\n".join(lines)


if __name__ == "__main__":  # the child process of run_legacy: one JSON line on stdout
    outcomes = run_all()
    sys.stdout.flush()
    print(json.dumps(outcomes))
