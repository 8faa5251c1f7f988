"""The import graph, read from the source (every import statement, those inside functions
included, which is where circles hide): no circle anywhere in the three packages, and no
function written twice across the server's wall (deployment/server imports nothing of
models or data_processing, so a shared fact must reach it through the bundle's code, not as
a copy). A planted circle and a planted copy show that each check finds what it looks for."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_processing", "models", "deployment")
SKIP = ("runs", "production", "previous")  # bundles: copies of code, not the packages
SERVER = "deployment.server"
MIN_NODES = 20  # a function body smaller than this (a return, a getter) is not a copy


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> its file, for the packages under root."""
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            relative = path.relative_to(root)
            if len(relative.parts) > 1 and relative.parts[1] in SKIP:
                continue
            parts = relative.with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports, anywhere in its source."""
    known = modules(root)
    edges = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in known
                    else node.module
                    for a in node.names
                ]
            else:
                continue
            edges[name] |= {t for t in targets if t in known and t != name}
    return edges


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, iterative)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def bodies(paths: list[Path], root: Path) -> dict[str, list[str]]:
    """A function's body (its docstring left out) as an AST dump -> where it is defined."""
    found: dict[str, list[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            body = node.body
            if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                body = body[1:]
            module = ast.Module(body=body, type_ignores=[])
            if sum(1 for _ in ast.walk(module)) >= MIN_NODES:
                where = f"{path.relative_to(root)}:{node.name}"
                found.setdefault(ast.dump(module), []).append(where)
    return found


def copies_across_the_wall(root: Path) -> list[tuple[list[str], list[str]]]:
    """Functions the server defines with the same body as a function elsewhere."""
    server, rest = [], []
    for name, path in modules(root).items():
        (server if name.startswith(SERVER) else rest).append(path)
    mine, theirs = bodies(server, root), bodies(rest, root)
    return [(mine[key], theirs[key]) for key in sorted(mine.keys() & theirs.keys())]


def test_no_circle_in_the_tree() -> None:
    assert circles(graph(ROOT)) == []


def test_no_function_is_copied_across_the_servers_wall() -> None:
    assert copies_across_the_wall(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_a_circle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "deployment/__init__.py": "",
            "deployment/server/__init__.py": "",
            "deployment/server/store.py": "from deployment.server import purge\n",
            "deployment/server/purge.py": "def f():\n    from deployment.server.store import x\n",
            "deployment/server/alone.py": "import deployment.server.store\n",
        },
    )
    assert circles(graph(root)) == [["deployment.server.purge", "deployment.server.store"]]


def test_a_copied_function_is_found(tmp_path: Path) -> None:
    body = (
        "def stats(image):\n"
        "    h, w = image.shape\n"
        "    return float(image.sum()) / (h * w), max(h, w)\n"
    )
    root = _tree(
        tmp_path,
        {
            "models/__init__.py": "",
            "models/measure.py": body,
            "deployment/__init__.py": "",
            "deployment/server/__init__.py": "",
            "deployment/server/ood.py": body.replace("def stats", "def gray"),
        },
    )
    assert copies_across_the_wall(root) == [
        (["deployment/server/ood.py:gray"], ["models/measure.py:stats"])
    ]
