"""The package's shape, kept: no import cycle among its modules, and the engine's classes and
functions small enough to read whole (`docs/training.md` draws the parts)."""

import ast
import io
import tokenize
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "spec_impl"
# The engine's limits, in lines of code (no blank, comment or docstring lines): a class holds
# one job, a function reads on one screen.
MAX_CLASS_LINES, MAX_FUNCTION_LINES = 200, 50


def _module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, modules):
    """The package modules `path` imports at its top level (what runs when it is imported)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name in modules}


def _cycle(graph):
    """One import cycle of `graph` as a list of modules, or `None`."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_in_the_package():
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    # a package's `__init__` importing its own modules is how a package exports; the cycle
    # that matters is between modules
    graph = {name: {m for m in _imports(path, paths) if not name.startswith(m + ".")}
             for name, path in paths.items()}
    assert _cycle(graph) is None


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def _code_lines(source, node):
    docstrings = set()
    for inner in ast.walk(node):
        body = getattr(inner, "body", None)
        if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and body \
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENDMARKER}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(n for n in range(token.start[0], token.end[0] + 1)
                         if node.lineno <= n <= node.end_lineno and n not in docstrings)
    return len(lines)


def _sizes(path):
    source = path.read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            yield node, _code_lines(source, node)


@pytest.mark.parametrize("path", sorted((PACKAGE / "trainer").glob("*.py")), ids=lambda p: p.name)
def test_the_engines_classes_and_functions_are_small(path):
    too_long = [f"{node.name}: {lines} lines" for node, lines in _sizes(path)
                if lines > (MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES)]
    assert too_long == []


def test_the_line_count_leaves_out_docstrings_and_comments(tmp_path):
    path = tmp_path / "m.py"
    path.write_text('def f(x):\n    """Doc.\n\n    More."""\n    # a comment\n\n    return x\n')
    [(node, lines)] = list(_sizes(path))
    assert (node.name, lines) == ("f", 2)
