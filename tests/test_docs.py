"""`make docs` builds the pages with mkdocs-material in strict mode, and a broken link fails
the build (as in CI)."""

import shutil
import subprocess
from pathlib import Path

from conftest import BIN, ROOT, tool_env


def build(docs: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(BIN / "mkdocs"),
            "build",
            "--strict",
            "-f",
            str(docs / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        env=tool_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_docs_build_strict(tmp_path: Path) -> None:
    done = build(ROOT / "docs", tmp_path / "site")
    assert done.returncode == 0, done.stderr
    pages = {p.name for p in (tmp_path / "site").glob("*.html")}
    assert {"index.html", "serving.html", "results.html", "experiments.html"} <= pages
    assert "fonts.googleapis" not in (tmp_path / "site/index.html").read_text()  # offline


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("site"))
    page = docs / "pages/results.md"
    page.write_text(page.read_text() + "\nSee [the old page](serving-old.md).\n")
    done = build(docs, tmp_path / "site")
    assert done.returncode == 1
    assert "serving-old.md" in done.stderr and "not found" in done.stderr
