"""Finite-difference gradient checks: the tape's gradients against central differences, with
the cause of a miss named from evidence (a wrong derivative, or a function that rounds to
float32 inside), for the layer and loss checks (`numeric_checks`, `loss_metric_checks`)."""

import numpy as np

from spec_impl.contract import _private
from spec_impl.contract.component import as_list
from spec_impl.contract.core import Failure

# Central differences in float64 err by ~ step**2 * f''' plus the rounding of the two values,
# ~ ROUNDOFF * |s| / step. A ReLU or max-pool that switches within the step spoils an estimate
# (in a network of 1e5 units, about one probe in ten at 1e-6); a smaller step makes that ten
# times rarer each, while a wrong gradient (a factor or a term off) fails at every step.
FD_STEPS = (1e-6, 1e-7, 1e-8)
FD_RTOL, FD_ATOL = 1e-5, 1e-7  # far above those errors, far below a wrong gradient's
ROUNDOFF = 1e-15  # float64's 2.2e-16 times a few roundings in the sum of the outputs
FD_PROBES = 12  # coordinates probed (spread over the inputs and weights); each costs two calls or more
# A component that rounds to float32 inside (an FFT cast to float32) gives estimates at float64's
# steps that disagree with one another (rounding ~ 1e-7 |s| / step). It is compared at larger
# steps, with float32's rounding (a few 1.2e-7) and a 1 % tolerance: far below a wrong derivative
# (a factor or a term off), far above the truncation error (step**2 times the third derivative).
FD32_STEPS = (1e-2, 1e-3)
FD32_RTOL, FD32_ATOL, ROUNDOFF32 = 1e-2, 1e-4, 1e-6


def _agrees(tape_value, estimate, size, step):
    """Whether a tape's derivative matches a central difference of a function of magnitude
    `size` at `step`."""
    bound = FD_ATOL + FD_RTOL * abs(estimate) + ROUNDOFF * size / step
    return abs(estimate - tape_value) <= bound


def _agrees32(tape_value, estimate, size, step):
    """`_agrees` at float32's rounding and tolerance."""
    bound = FD32_ATOL + FD32_RTOL * abs(estimate) + ROUNDOFF32 * size / step
    return abs(estimate - tape_value) <= bound


def fd_failure(what, index, tape_value, estimates, steps, fix, note=""):
    step_text = " / ".join(f"{s:g}" for s in steps)
    found = " / ".join(f"{e:.6g}" for e in estimates)
    return Failure(f"d {what}{[int(i) for i in index]} is {tape_value:.6g} by the tape and {found} by "
                   f"central differences (float64, steps {step_text}), which agree with each "
                   f"other: the derivative is wrong{note}", fix)


def traced_graph(value, inputs):
    """The graph of `value` traced on `inputs`."""
    import tensorflow as tf

    return tf.function(value, autograph=False).get_concrete_function(inputs).graph


def _low_precision_ops(graph):
    """The types of the ops of `graph` (traced on float64 inputs) that compute in a narrower
    float dtype: where a float64 component rounds to float32 inside."""
    import tensorflow as tf

    narrow = (tf.float32, tf.float16, tf.bfloat16, tf.complex64)
    return sorted({op.type for op in graph.get_operations()
                   if op.type not in ("Const", "Placeholder", "Identity", "ReadVariableOp")
                   and any(out.dtype in narrow for out in op.outputs)})


class Coordinates:
    """The float inputs (as tensors rebuilt from arrays) and trainable weights of a float64
    component, one coordinate of which can be moved at a time."""

    def __init__(self, inputs, weights):
        self.structure = inputs
        self.arrays = [np.array(a) for a in as_list(inputs)]
        self.targets = [(f"input {i}", i) for i, a in enumerate(self.arrays) if a.dtype.kind == "f"]
        self.targets += [(w.path, w) for w in weights]

    def tensors(self):
        """The inputs as fresh tensors, in their structure (`tape.watch` takes tensors; some
        `keras.ops` refuse variables)."""
        import tensorflow as tf

        tensors = [tf.constant(a) for a in self.arrays]
        if isinstance(self.structure, dict):
            return dict(zip(self.structure, tensors, strict=True))
        return tensors if isinstance(self.structure, (list, tuple)) else tensors[0]

    def gradients(self, value):
        """The tape's gradients of `value(inputs)` with respect to every target, as arrays."""
        import tensorflow as tf

        tensors = self.tensors()
        flat = as_list(tensors)
        with tf.GradientTape() as tape:
            tape.watch([flat[t] for _, t in self.targets if isinstance(t, int)])
            s = value(tensors)
        sources = [flat[t] if isinstance(t, int) else t for _, t in self.targets]
        grads = tape.gradient(s, sources)
        return [np.zeros(tuple(src.shape)) if g is None else np.asarray(tf.convert_to_tensor(g))
                for g, src in zip(grads, sources, strict=True)]

    def shape(self, target):
        return self.arrays[target].shape if isinstance(target, int) else tuple(target.shape)

    def difference(self, value, target, index, step):
        """The central difference of `value` along one coordinate, and `value`'s magnitude."""
        bumped = []
        for sign in (1, -1):
            if isinstance(target, int):
                original = self.arrays[target][index]
                self.arrays[target][index] = original + sign * step
                bumped.append(float(value(self.tensors())))
                self.arrays[target][index] = original
            else:
                original = target.numpy()
                moved = original.copy()
                moved[index] += sign * step
                target.assign(moved)
                bumped.append(float(value(self.tensors())))
                target.assign(original)
        return (bumped[0] - bumped[1]) / (2 * step), max(1.0, abs(bumped[0]))


def _consistent(estimates, steps):
    """Whether central differences at several steps agree with each other within float64's
    rounding; when they do not, the function itself rounds coarser than float64."""
    values = [e for e, _ in estimates]
    size = max(s for _, s in estimates)
    bound = FD_ATOL + FD_RTOL * max(abs(v) for v in values) + ROUNDOFF * size / min(steps)
    return max(values) - min(values) <= bound


def _probe(coords, value, target, index, tape_value):
    """`None` when the tape matches central differences at a step of `FD_STEPS` (tried in
    order, stopping at the first match), else the estimates with `value`'s magnitudes."""
    estimates = []
    for step in FD_STEPS:
        estimate, size = coords.difference(value, target, index, step)
        estimates.append((estimate, size))
        if _agrees(tape_value, estimate, size, step):
            return None
    return estimates


def probe32(coords, value, target, index, tape_value):
    """`None` when the tape matches at one of float32's steps, else the estimates."""
    estimates = []
    for step in FD32_STEPS:
        estimate, size = coords.difference(value, target, index, step)
        estimates.append(estimate)
        if _agrees32(tape_value, estimate, size, step):
            return None
    return estimates


def compare_gradients(coords, value, what):
    """Compare the tape's gradients of `value` with central differences at `FD_PROBES`
    coordinates of `coords`; raise `Failure` for a wrong derivative, and return the detail.

    A function whose graph computes in a narrower float than float64 (the detail names those
    ops), or whose estimates at float64's steps disagree with each other, rounds to float32
    inside: that coordinate is then compared at float32's steps and tolerance. A miss whose
    estimates agree, in a graph all float64, is a wrong derivative.
    """
    grads = coords.gradients(value)
    rng = np.random.default_rng(11)
    probes, rounded = 0, None
    for n in range(FD_PROBES):
        (name, target), grad = coords.targets[n % len(coords.targets)], grads[n % len(grads)]
        size = int(np.prod(coords.shape(target)))
        if not size:
            continue
        index = np.unravel_index(int(rng.integers(size)), coords.shape(target))
        tape_value = float(grad[index])
        probes += 1
        missed = _probe(coords, value, target, index, tape_value)
        if missed is None:
            continue
        graph = traced_graph(value, coords.tensors())
        narrow = _low_precision_ops(graph)
        if not narrow and _consistent(missed, FD_STEPS):
            raise fd_failure(f"{what} / d {name}", index, tape_value, [e for e, _ in missed],
                              FD_STEPS, fix_for(graph))
        rounded = rounded or narrow or ["none found"]
        again = probe32(coords, value, target, index, tape_value)
        if again is not None:
            raise fd_failure(f"{what} / d {name}", index, tape_value, again, FD32_STEPS,
                              fix_for(graph), f"; float64's estimates disagreed with each other, "
                              f"as it rounds to float32 inside (ops {', '.join(rounded[:5])})")
    if rounded:
        return (f"{probes} coordinates; rounds to float32 inside (ops {', '.join(rounded[:5])}), "
                f"so compared at float32's steps {' / '.join(f'{s:g}' for s in FD32_STEPS)}")
    return f"{probes} coordinates"


def fix_for(graph):
    """The fix for a wrong derivative, naming only what the component's graph holds."""
    found = _private.custom_gradients(graph)
    if found:
        return (f"check the `grad` function of the {found} `tf.custom_gradient`(s) that `call` "
                f"runs")
    return ("check where `call` stops or replaces gradients (`tf.stop_gradient`, "
            "`ops.stop_gradient`, a value taken out of the tape through NumPy or a Python number)")
