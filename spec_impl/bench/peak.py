"""The machine's peak: the theoretical one from the processor's own figures, and the best matmul
this run measures.

**Theoretical** (`theoretical_peak`): physical cores x clock x FLOPs per cycle per core, per
compute dtype, each factor probed at run time and recorded in the benchmark JSON's
`machine["peak"]`:
- cores: the distinct physical cores among the CPUs this process may run on (SMT siblings
  share one core's vector units);
- clock: the highest of the clock the kernel reports (`cpuinfo_max_freq`, `cpu MHz`) and the
  clock measured now by a chain of dependent integer adds (one a cycle on every x86-64 core),
  so that a core boosting above its nominal clock (a virtual machine reports the nominal one)
  is not under-counted;
- FLOPs per cycle: from the vector and FMA units the CPU's flags declare, with the most FMA
  units any core of that family has (two): 64 float32 FLOPs with AVX-512, 32 with AVX2 + FMA,
  16 with AVX, 8 with SSE2; bfloat16 at 1024 with AMX, 128 with AVX-512 BF16, else at the
  float32 rate (converted, never faster).
Each factor is an upper bound, so no step can run above it: a row's `% peak` over 100 would be
a miscounted step, and the analytic count (`spec_impl.bench.flops`) checks the count.

**Measured** (`best_matmul`): square matmuls of several sizes through TensorFlow and, in
float32, NumPy's BLAS; the best is what this machine's libraries reach, beside the theoretical
figure (`% matmul`).
"""

import contextlib
import ctypes
import mmap
import os
import platform
import struct
import time

import numpy as np
import tensorflow as tf

from spec_impl.bench.provenance import cpu_flags

MATMUL_SIZES = (512, 1024, 2048)
MATMUL_ROUNDS = 3
# (flag set, FLOPs per cycle per core) in order of preference: 2 FMA units x lanes x 2.
FLOAT32_UNITS = ((("avx512f", "fma"), 64, "AVX-512 + FMA"), (("avx2", "fma"), 32, "AVX2 + FMA"),
                 (("avx",), 16, "AVX"), (("sse2",), 8, "SSE2"))
BFLOAT16_UNITS = ((("amx_bf16",), 1024, "AMX-BF16"), (("avx512_bf16",), 128, "AVX-512 BF16"))
ADDS_PER_ITERATION = 64  # dependent `add rax, 1` per loop iteration of the clock probe
CLOCK_PROBE_ITERATIONS = 1_000_000


def physical_cores():
    """Distinct (package, core) pairs among the CPUs this process may run on, from
    `/proc/cpuinfo`; the usable CPU count where the topology cannot be read."""
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    cores, cpu, package = set(), None, "0"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "processor":
                    cpu = int(value)
                elif key == "physical id":
                    package = value
                elif key == "core id" and (allowed is None or cpu in allowed):
                    cores.add((package, value))
    except (OSError, ValueError):
        pass
    return len(cores) or len(allowed or ()) or os.cpu_count() or 1


def _reported_ghz():
    """The highest clock the kernel reports: `cpuinfo_max_freq` (kHz) or `cpu MHz`."""
    found = {}
    with contextlib.suppress(OSError, ValueError):
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            found["cpuinfo_max_freq"] = int(f.read()) / 1e6
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        if mhz:
            found["cpu MHz"] = max(mhz) / 1e3
    return found


def measured_ghz(iterations=CLOCK_PROBE_ITERATIONS, rounds=3):
    """The core's clock now, in GHz: a chain of dependent `add` instructions (one retires per
    cycle) timed on one core; `None` where it cannot run (not x86-64 Linux, or no executable
    memory)."""
    if platform.machine() not in ("x86_64", "AMD64") or not hasattr(mmap, "PROT_EXEC"):
        return None
    body = bytes.fromhex("4883c001") * ADDS_PER_ITERATION  # add rax, 1
    code = (bytes.fromhex("31c0") + body + bytes.fromhex("48ffcf")  # xor eax,eax; ...; dec rdi
            + b"\x0f\x85" + struct.pack("<i", -(len(body) + 9)) + b"\xc3")  # jnz loop; ret
    try:
        memory = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None
    memory.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    loop = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint64)(address)
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        loop(iterations)
        best = max(best, ADDS_PER_ITERATION * iterations / (time.perf_counter() - start) / 1e9)
    del loop, address  # the buffer's address is exported until these go
    return best


def _units(flags, table):
    for needed, flops, name in table:
        if all(flag in flags for flag in needed):
            return flops, name
    return None, None


def theoretical_peak(device="cpu"):
    """The `machine["peak"]` record: cores, clock (and where it was read), FLOPs per cycle per
    core and `gflops` per compute dtype. On a GPU nothing is probed (`gflops` empty)."""
    if device == "gpu":
        return {"gflops": {}, "note": "not probed on a GPU: % peak is left out, % matmul stays"}
    flags = cpu_flags()
    clocks = _reported_ghz()
    measured = measured_ghz()
    if measured is not None:
        clocks["measured (dependent adds)"] = measured
    source, ghz = max(clocks.items(), key=lambda item: item[1], default=(None, None))
    float32, float32_units = _units(flags, FLOAT32_UNITS)
    bfloat16, bfloat16_units = _units(flags, BFLOAT16_UNITS)
    per_cycle = {"float32": float32, "bfloat16": max(bfloat16 or 0, float32 or 0) or None}
    cores = physical_cores()
    gflops = {dtype: cores * ghz * flops for dtype, flops in per_cycle.items()
              if flops and ghz}
    return {"cores": cores, "clock_ghz": ghz, "clock_source": source, "clocks_ghz": clocks,
            "flops_per_cycle": per_cycle,
            "units": {"float32": float32_units, "bfloat16": bfloat16_units or float32_units},
            "gflops": gflops}


def _best_seconds(fn, rounds):
    fn()  # tracing, first touch
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def best_matmul(dtypes=("float32", "bfloat16"), sizes=MATMUL_SIZES, rounds=MATMUL_ROUNDS):
    """`{dtype: {"gflops": the best, "by": which, "tensorflow": {n: GFLOP/s}, "numpy": {...}}}`:
    n x n matmuls through TensorFlow in each dtype, and through NumPy's BLAS in float32 (on the
    host), best of `rounds` each."""
    result = {}
    for dtype in dtypes:
        measured = {"tensorflow": {}, "numpy": {}}
        matmul = tf.function(lambda a, b: tf.reduce_sum(tf.cast(a @ b, tf.float32)))
        for n in sizes:
            a = tf.cast(tf.random.normal((n, n), seed=1), dtype)
            b = tf.cast(tf.random.normal((n, n), seed=2), dtype)
            seconds = _best_seconds(lambda a=a, b=b, f=matmul: float(f(a, b)), rounds)
            measured["tensorflow"][n] = 2 * n**3 / seconds / 1e9
            if dtype == "float32":
                x, y = np.asarray(a), np.asarray(b)
                measured["numpy"][n] = 2 * n**3 / _best_seconds(lambda x=x, y=y: x @ y, rounds) / 1e9
        library, n, gflops = max(((lib, n, g) for lib, by_n in measured.items()
                                  for n, g in by_n.items()), key=lambda item: item[2])
        result[dtype] = {"gflops": gflops, "by": f"{library} n={n}", **measured}
    return result
