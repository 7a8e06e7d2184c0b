"""The other side of the `fresh_process_reload` check, run as
`python -m spec_impl.contract.child JOBS.json`.

For each job of the list (one component, or a sweep's many in one process) it imports the
component's module (by name, and nothing else of the user's), loads the `.keras` file (or
deserializes the JSON of a loss or metric) without `custom_objects`, evaluates it on the saved
inputs and writes the outputs; a job that fails writes its error's first line beside them
(`OUTPUTS.error`) and the next job runs. A process that starts anew per module would cost a
TensorFlow import each; a module's registrations are what it adds, and a job whose module is
not yet imported imports it first.
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


def run_job(job):
    """Load and evaluate one saved component (`{kind, module, saved, inputs, outputs}`)."""
    importlib.import_module(job["module"])
    import keras
    import numpy as np

    inputs = load_arrays(job["inputs"])
    if job["kind"] in ("layer", "model"):
        model = keras.models.load_model(job["saved"])
        outputs = model(inputs, training=False)
        outputs = [np.asarray(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    else:
        with open(job["saved"]) as f:
            obj = keras.saving.deserialize_keras_object(json.load(f))
        if job["kind"] == "loss":
            outputs = [np.asarray(obj(*inputs))]
        else:
            obj.update_state(*inputs)
            outputs = [np.asarray(obj.result())]
    save_arrays(job["outputs"], outputs)


def main(argv):
    from spec_impl.contract.core import first_line

    (manifest,) = argv
    with open(manifest) as f:
        jobs = json.load(f)
    failed = 0
    for job in jobs:
        try:
            run_job(job)
        except Exception as error:
            failed += 1
            with open(job["outputs"] + ".error", "w") as f:
                f.write(first_line(error))
            print(first_line(error), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
