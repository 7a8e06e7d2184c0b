"""A catalogue of components for the contract's sweep: each entry a factory, its inputs and what
it covers, its factory importable by name (`module:CATALOGUE.factories.NAME`) so that a fresh
process finds it."""

import dataclasses
import types

MODULES = {"layer": "layers", "model": "models", "loss": "losses", "metric": "metrics"}
PREFIXES = {"layer": "", "model": "", "loss": "loss_", "metric": "metric_"}  # a loss and a metric share names


@dataclasses.dataclass(frozen=True)
class Component:
    """One entry of a sweep.

    Attributes:
        name: the entry's name (an attribute of its catalogue's `factories`).
        covers: the class it checks (`"layers.Dense"`).
        kind: `"layer"`, `"model"`, `"loss"` or `"metric"`.
        shapes: per-example input shapes (a layer's inputs, in `call`'s order), or for a loss or
            metric the shape its targets are made for.
        dtypes: the inputs' dtypes (`None`: float32).
        target: for a loss or metric, the kind of targets (`spec_impl.contract.facts.TARGETS`);
            `None` lets the contract read it from the component.
        reference: `module:attribute` of the factory, for a fresh process.
        factory: the callable that makes the component.
    """

    name: str
    covers: str
    kind: str
    shapes: tuple
    dtypes: tuple
    target: str
    reference: str
    factory: object = dataclasses.field(repr=False, compare=False)


class Catalogue:
    """Entries by name, their factories as attributes of `factories`.

    Args:
        module: the module the catalogue lives in (its `__name__`).
        attribute: the catalogue's name in that module.
    """

    def __init__(self, module, attribute):
        self.module, self.attribute = module, attribute
        self.factories = types.SimpleNamespace()
        self.entries = {}

    def add(self, kind, name, make, shapes, dtypes=None, covers=None, target=None):
        key = PREFIXES[kind] + name
        if key in self.entries:
            raise ValueError(f"the catalogue's entry {key!r} is defined twice")
        attribute = key.replace(".", "_")  # the factory's name in `factories`
        setattr(self.factories, attribute, make)
        module = name.split(".")[0] if "." in name else MODULES[kind]
        covered = covers or name.split("__")[0].split(".")[-1]
        self.entries[key] = Component(
            key, f"{module}.{covered}", kind, tuple(shapes),
            None if dtypes is None else tuple(dtypes), target,
            f"{self.module}:{self.attribute}.factories.{attribute}", make)

    def layer(self, name, make, *shapes, dtypes=None, covers=None, kind="layer"):
        """A layer (or model) entry; `shapes` one per input (a list of shapes: one input that
        is a list, as a merge layer takes)."""
        if len(shapes) == 1 and isinstance(shapes[0], list):
            shapes = shapes[0]
        self.add(kind, name, make, shapes, dtypes, covers)

    def loss(self, name, make, shape=(3,), target=None, covers=None):
        self.add("loss", name, make, (shape,), None, covers, target)

    def metric(self, name, make, shape=(3,), target=None, covers=None):
        self.add("metric", name, make, (shape,), None, covers, target)

    def __getitem__(self, name):
        return self.entries[name]

    def __iter__(self):
        return iter(self.entries.values())

    def __len__(self):
        return len(self.entries)


def with_kwargs(cls, *args, **fixed):
    """A factory `cls(*args, **fixed, **kw)` that takes `dtype=` and the like."""
    return lambda **kw: cls(*args, **fixed, **kw)
