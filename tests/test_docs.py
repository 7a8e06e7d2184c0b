"""The README and the pages under docs/ name only what exists: every relative link, and every
`spec_impl/...`, `tests/...` and `benchmarks/...` path (a `::test` suffix is checked too)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# a path ends at a character that cannot continue it (`tests/test_<module>.py` is a pattern)
PATH = re.compile(r"(?<![\w/.-])((?:spec_impl|tests|benchmarks)/[\w/.-]*\w)(?![\w<*])(?:::(\w+))?")


def _ids(pages):
    return [str(p.relative_to(ROOT)) for p in pages]


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_relative_link_exists(page):
    text = page.read_text()
    missing = [target for target in LINK.findall(text)
               if "://" not in target and not (page.parent / target).exists()]
    assert missing == []


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_named_path_exists(page):
    missing = []
    for path, test in PATH.findall(page.read_text()):
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif test and f"def {test}(" not in target.read_text():
            missing.append(f"{path}::{test}")
    assert missing == []


def test_the_pages_the_readme_promises_are_there():
    readme = (ROOT / "README.md").read_text()
    for page in ("specification", "training", "distributed", "benchmarks", "idioms", "sources",
                 "faults"):
        assert f"(docs/{page}.md)" in readme
    assert len(readme.splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_every_test_named_exists(page):
    # a row of docs/faults.md names its tests by function name after the first one's path
    defined = {m for f in (ROOT / "tests").rglob("test_*.py")
               for m in re.findall(r"^\s*def (test_\w+)\(", f.read_text(), re.M)}
    defined |= {m for f in (ROOT / "benchmarks").rglob("*.py")
                for m in re.findall(r"^\s*def (test_\w+)\(", f.read_text(), re.M)}
    named = set(re.findall(r"`(?:[\w/.]+::)?(test_\w+)`", page.read_text()))
    assert sorted(named - defined) == []


def test_the_check_page_explains_every_check_of_every_kind():
    from spec_impl.contract import KINDS, check_names

    table = (ROOT / "docs" / "check.md").read_text()
    for kind in KINDS:
        for name in check_names(kind):
            assert f"| `{name}`" in table, f"docs/check.md has no row for {kind} check {name!r}"
