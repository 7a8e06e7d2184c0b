"""What a benchmark JSON records about where and how it was measured, so that two files can be
told comparable or not (`spec-impl bench --compare`).

`schema_version` changes whenever a field a comparison reads changes meaning; a file without
one (written before it existed) is refused by `--compare`. The fields that make two runs
incomparable (`COMPARED_FIELDS`: the CPU, its kernel-deciding flags, the device and the
versions of TensorFlow and Keras) are named by the comparison when they differ.
"""

import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time

SCHEMA_VERSION = 2
# CPU flags that decide which kernels oneDNN and XLA use.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# Environment variables that change kernels or threads.
KERNEL_ENVIRONMENT = ("TF_ENABLE_ONEDNN_OPTS", "XLA_FLAGS", "TF_XLA_FLAGS", "TF_NUM_INTEROP_THREADS",
                      "TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS", "KMP_AFFINITY", "KMP_BLOCKTIME",
                      "CUDA_VISIBLE_DEVICES", "TF_GPU_ALLOCATOR", "TF_CPP_MIN_LOG_LEVEL")
# What must agree for a comparison to mean what it says (`--force` compares anyway).
COMPARED_FIELDS = ("cpu", "cores", "device", "tensorflow", "keras", *KERNEL_FLAGS)


def cpu_flags():
    """The set of the CPU's flags (`/proc/cpuinfo`; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags")
                    for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _git_commit():
    """The commit of the checkout the package runs from, `+dirty` with local changes; `None`
    when installed from a wheel or git is absent."""
    folder = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isdir(os.path.join(folder, ".git")) and \
            not os.path.isfile(os.path.join(folder, ".git")):
        return None
    try:
        commit = subprocess.run(["git", "-C", folder, "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", folder, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _command():
    """The command line, `spec-impl ...` when run as `spec-impl` or `python -m spec_impl`."""
    program = os.path.basename(sys.argv[0]) if sys.argv else ""
    if program == "spec-impl" or sys.argv[0].endswith(os.path.join("spec_impl", "__main__.py")):
        return shlex.join(["spec-impl", *sys.argv[1:]])
    return shlex.join(sys.argv)


def provenance(device="cpu"):
    """The `machine` record of a benchmark JSON: the machine, the software, the command and the
    environment (see the module docstring)."""
    import keras
    import numpy as np
    import tensorflow as tf

    flags = cpu_flags()
    try:
        version = importlib.metadata.version("spec_impl")
    except importlib.metadata.PackageNotFoundError:
        version = None
    info = {
        "cpu": _cpu_model(), "cores": os.cpu_count(), "memory_bytes": _memory_bytes(),
        "device": device, **{flag: flag in flags for flag in KERNEL_FLAGS},
        "python": platform.python_version(), "tensorflow": tf.__version__,
        "keras": keras.__version__, "numpy": np.__version__, "spec_impl": version,
        "git_commit": _git_commit(), "command": _command(),
        "environment": {k: os.environ[k] for k in KERNEL_ENVIRONMENT if k in os.environ},
        "date": time.strftime("%Y-%m-%d"), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device == "gpu":
        gpus = tf.config.list_physical_devices("GPU")
        info["gpu"] = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                       for g in gpus]
        info["tf32"] = tf.config.experimental.tensor_float_32_execution_enabled()
    return info


def differences(base, new):
    """`["tensorflow: 2.16.2 -> 2.21.0", ...]`: the `COMPARED_FIELDS` where two `machine`
    records differ."""
    return [f"{field}: {base.get(field)} -> {new.get(field)}" for field in COMPARED_FIELDS
            if base.get(field) != new.get(field)]
