"""Register the production model in the git-tag model registry (GTO) and assign it prod.

The artifact is `classifier` in dvc.yaml `artifacts:` (path deployment/production, type
model). A version is a git tag `classifier@vX.Y.Z` on the commit whose dvc.lock holds the
promoted bundle; the tag message carries the cell name and model.keras sha256, which is how
a version is found again. `classifier#prod#N` assigns the stage. Anyone can then fetch the
production model with `dvc artifacts get . classifier --stage prod`.

A tag needs a commit that holds the promotion: when dvc.lock (or the promotion outputs) are
not committed, this says what to commit and exits 0; the local pointer is already in place
(select wrote it). Running it twice registers nothing new: it is idempotent.

Run: python -m deployment.release.registry [--rev HEAD] [--pointer deployment/production.json]
"""

import argparse
import subprocess
import sys
from pathlib import Path

from data_processing.core import cli
from deployment.release import production
from deployment.server import pointer as server_pointer

ARTIFACT = "classifier"
STAGE = "prod"


def git(*args: str, check: bool = True) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=check
    ).stdout.strip()


def gto(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gto.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gto {' '.join(args)}: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout.strip()


def versions() -> dict[str, str]:
    """{sha256: version} for every registered version, from the tag messages."""
    found = {}
    fmt = "%(refname:short)\t%(contents:subject)"
    tags = git("tag", "-l", f"{ARTIFACT}@v*", f"--format={fmt}", check=False)  # none: no repo
    for line in tags.splitlines():
        tag, _, subject = line.partition("\t")
        for word in subject.split():
            if word.startswith("sha256:"):
                found[word.removeprefix("sha256:")] = tag.partition("@")[2]
    return found


def uncommitted(paths: list[str]) -> list[str]:
    """The paths git sees as changed or untracked."""
    return [line[3:] for line in git("status", "--porcelain", "--", *paths).splitlines()]


def register(entry: dict, rev: str) -> str:
    """Register entry's version at rev (unless it already is) and assign it prod."""
    known = versions()
    version = known.get(entry["sha256"])
    if version is None:
        message = f"{entry['name']} sha256:{entry['sha256']} f1:{entry['metrics']['f1_macro']}"
        gto("register", ARTIFACT, rev, "--message", message)
        version = versions()[entry["sha256"]]
        print(f"registry: registered {ARTIFACT}@{version} ({entry['name']}) at {rev}")
    assign_prod(version, f"{STAGE}: {entry['name']} {entry['version']}")
    return version


def assign_prod(version: str, message: str) -> None:
    """Assign the stage prod to `version` unless it has it already."""
    try:
        current = gto("show", f"{ARTIFACT}#{STAGE}", "--ref")
    except RuntimeError:  # no stage assigned yet
        current = ""
    if current == f"{ARTIFACT}@{version}":
        print(f"registry: {ARTIFACT} {version} is already {STAGE}")
        return
    gto("assign", ARTIFACT, "--version", version, "--stage", STAGE, "--message", message)
    print(f"registry: {ARTIFACT} {version} is now {STAGE}")


def main() -> None:
    parser = argparse.ArgumentParser(prog=cli.prog(), description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to tag (default HEAD)")
    parser.add_argument("--pointer", type=Path, default=server_pointer.PATH)
    args = parser.parse_args()
    entry = production.read(args.pointer)
    if entry is None:
        sys.exit(f"error: {args.pointer}: no production pointer; run dvc repro first")
    pending = uncommitted(["dvc.yaml", "dvc.lock"]) if args.rev == "HEAD" else []
    if pending:
        print(
            f"registry: {entry['name']} version {entry['version']} is in production locally "
            f"({args.pointer}), but {', '.join(pending)} is not committed, so there is no "
            "commit to tag yet. Commit it, then run this again:\n"
            f"    git add {' '.join(pending)} && git commit -m "
            f"'Promote {entry['name']} {entry['version']}'\n"
            "    python -m deployment.release.registry"
        )
        return
    try:
        register(entry, git("rev-parse", args.rev))
    except RuntimeError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
