"""The other side of the `fresh_process_reload` check, run as `python -m spec_impl.contract.child`.

It imports nothing but the user's module (by name), loads the `.keras` file (or deserializes the
JSON of a loss or metric) without `custom_objects`, evaluates it on the saved inputs and writes
the outputs. On failure it prints the error's first line and exits 1.
"""

import importlib
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def save_arrays(path, data):
    """Save an array, a list or a dict of arrays to an `.npz` that `load_arrays` reads back."""
    import numpy as np

    if isinstance(data, dict):
        np.savez(path, **{f"d:{k}": v for k, v in data.items()})
    elif isinstance(data, (list, tuple)):
        np.savez(path, **{f"l:{i:04d}": v for i, v in enumerate(data)})
    else:
        np.savez(path, x=data)


def load_arrays(path):
    import numpy as np

    with np.load(path) as archive:
        keys = sorted(archive.files)
        if keys == ["x"]:
            return archive["x"]
        if keys and keys[0].startswith("d:"):
            return {k[2:]: archive[k] for k in archive.files}
        return [archive[k] for k in keys]


def main(argv):
    kind, module, saved, inputs_path, out_path = argv
    importlib.import_module(module)
    import keras
    import numpy as np

    inputs = load_arrays(inputs_path)
    if kind in ("layer", "model"):
        model = keras.models.load_model(saved)
        outputs = model(inputs, training=False)
        outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    else:
        with open(saved) as f:
            obj = keras.saving.deserialize_keras_object(json.load(f))
        y_true, y_pred = inputs
        if kind == "loss":
            outputs = [np.asarray(obj(y_true, y_pred))]
        else:
            obj.update_state(y_true, y_pred)
            outputs = [np.asarray(obj.result())]
    save_arrays(out_path, outputs)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except Exception as error:
        from spec_impl.contract.core import first_line

        print(first_line(error), file=sys.stderr)
        sys.exit(1)
