"""The layout contracts (pyproject.toml [tool.importlinter]): the tree keeps them, and a
wrong-direction import, planted in a copy of the tree, breaks the contract it crosses."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("data_processing", "models", "deployment")
# Run import-linter on the tree in the working directory, not on the editable install (its
# import finder would map the package names back to the repo).
LINT = (
    "import sys; "
    "sys.meta_path[:] = [f for f in sys.meta_path "
    "if not getattr(f, '__module__', '').startswith('__editable__')]; "
    "sys.path.insert(0, '.'); "
    "from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
)


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LINT], cwd=tree, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A copy of the three packages' Python files and pyproject.toml."""
    copy = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        for source in (ROOT / package).rglob("*.py"):
            relative = source.relative_to(ROOT)
            if relative.parts[1] in ("runs", "production", "previous"):
                continue  # bundles: copies of code, not the package
            (copy / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / relative)
    shutil.copy2(ROOT / "pyproject.toml", copy)
    return copy


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    "module, statement, contract",
    [
        ("deployment/server/oops.py", "import models.common.serving", "server imports"),
        ("deployment/server/oops.py", "from data_processing.core import io", "server imports"),
        ("data_processing/core/oops.py", "from data_processing import schema", "core imports"),
        ("models/oops.py", "from deployment.release import production", "models never"),
        ("deployment/release/oops.py", "import models.train", "release never"),
        ("data_processing/oops.py", "import models", "data_processing imports neither"),
    ],
)
def test_a_wrong_direction_import_breaks_its_contract(
    tree: Path, module: str, statement: str, contract: str
) -> None:
    planted = tree / module
    planted.write_text(statement + "\n")
    try:
        result = lint(tree)
    finally:
        planted.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 broken" in result.stdout
    broken = [line for line in result.stdout.splitlines() if line.endswith("BROKEN")]
    assert len(broken) == 1 and broken[0].startswith(contract), result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout  # names the importer


def oversized(max_file_lines: int = 300, max_function_lines: int = 60) -> list[str]:
    """Source files and functions (docstring included) over the size guides."""
    import ast

    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if relative.parts[1] in ("runs", "production", "previous"):
                continue
            text = path.read_text()
            if (lines := text.count("\n")) > max_file_lines:
                found.append(f"{relative}: {lines} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    if length > max_function_lines:
                        found.append(f"{relative}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_file_or_function_over_the_size_guides() -> None:
    assert oversized() == []


if __name__ == "__main__":  # python tests/test_layout.py [MAX_FILE MAX_FUNCTION]: the list
    print("\n".join(oversized(*map(int, sys.argv[1:3]))) or "none")
