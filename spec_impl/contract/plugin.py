"""The contract as a pytest plugin (registered under `pytest11`: installing spec_impl enables it).

Mark a test with `keras_contract` and take the fixture of the same name; the test runs once per
check, named after it (`test_scale[config_round_trip]`), and fails with the check's cause and
fix, or skips with its reason::

    import pytest

    @pytest.mark.keras_contract("my_layers:make_scale", input_shape=(5,))
    def test_scale(keras_contract):
        pass  # the check's verdict is applied after the body; `keras_contract` is its Result

The marker takes the factory (a callable, or "module:factory") and either `inputs=` (arrays) or
`input_shape=` (one shape, or a list for several inputs) with `input_dtype=` (for a loss or
metric: y_pred's shape, with targets of the kind `targets=` names or its name declares); and
`kind=`, `expect=`, `skip=`, `train_target=`, `loss=`, `targets=` as
`spec_impl.contract.check_component`. A check that warns passes its test. The
contract runs once per marked test function; its checks share that run. `--spec-impl-cpu-devices
N` splits the CPU into N logical devices before TensorFlow starts, so that the two-replica check
runs without GPUs.

This module imports neither TensorFlow nor the contract until a marked test needs them.
"""

import pytest

MARKER = "keras_contract"
_REPORTS = {}


def pytest_addoption(parser):
    group = parser.getgroup("spec_impl", "spec_impl's contract for Keras components")
    group.addoption("--spec-impl-cpu-devices", type=int, default=None, metavar="N",
                    help="split the CPU into N logical devices before TensorFlow starts (the "
                         "contract's mirrored check needs 2)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{MARKER}(make, inputs=None, *, input_shape=None, input_dtype=None, kind=None, "
                   "expect=None, skip=()): run spec_impl's contract on make(), one test per check")
    devices = config.getoption("--spec-impl-cpu-devices")
    if devices:
        from spec_impl.trainer.distribute import cpu_devices

        cpu_devices(devices)


def _settings(marker):
    """`(make, inputs, options)` from the marker's arguments."""
    from spec_impl.contract import generate, load_target

    if len(marker.args) not in (1, 2):
        raise pytest.UsageError(f"@pytest.mark.{MARKER} takes the factory and optionally the "
                                f"inputs; received {len(marker.args)} positional arguments")
    options = dict(marker.kwargs)
    make = marker.args[0]
    if isinstance(make, str):
        make = load_target(make)
        options.setdefault("target", marker.args[0])
    inputs = marker.args[1] if len(marker.args) == 2 else options.pop("inputs", None)
    shape = options.pop("input_shape", None)
    dtype = options.pop("input_dtype", None)
    if inputs is None:
        if shape is None:
            raise pytest.UsageError(f"@pytest.mark.{MARKER} needs inputs= or input_shape=")
        shapes = shape if isinstance(shape, list) else [shape]
        dtypes = dtype if isinstance(dtype, list) else ([dtype] if dtype else None)
        if _kind(make, options) in ("loss", "metric"):
            from spec_impl.contract.component import loss_inputs

            inputs, options["targets"] = loss_inputs(make(), shapes[0], options.get("targets"))
        else:
            inputs = generate([tuple(s) for s in shapes], dtypes)
    return make, inputs, options


def _kind(make, options):
    from spec_impl.contract.component import kind_of

    return options.get("kind") or kind_of(make()) or "layer"


def pytest_generate_tests(metafunc):
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None or MARKER not in metafunc.fixturenames:
        return
    from spec_impl.contract import check_names

    make, _, options = _settings(marker)
    metafunc.parametrize(MARKER, check_names(_kind(make, options)), indirect=True)


@pytest.fixture
def keras_contract(request):
    """The contract's `Result` for this test's check (the test is parametrized by check)."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None or not hasattr(request, "param"):
        raise pytest.UsageError(f"the {MARKER} fixture needs @pytest.mark.{MARKER}(...) on the test")
    key = (request.node.path, request.node.cls, request.node.originalname)
    if key not in _REPORTS:
        from spec_impl.contract import check_component

        make, inputs, options = _settings(marker)
        _REPORTS[key] = check_component(make, inputs, label=request.node.originalname, **options)
    return _REPORTS[key][request.param]


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    outcome = yield
    result = pyfuncitem.funcargs.get(MARKER)
    if result is not None and pyfuncitem.get_closest_marker(MARKER) is not None:
        from spec_impl.contract import FAILED, SKIPPED

        if result.status == FAILED:
            pytest.fail(f"{result.check}: {result.cause}\nfix: {result.fix}", pytrace=False)
        if result.status == SKIPPED:
            pytest.skip(f"{result.check}: {result.detail}")
    return outcome
