"""Register each dataset's production model in the git-tag model registry (GTO), assign prod.

Each dataset is an artifact, `<dataset>-classifier` in dvc.yaml `artifacts:` (path
deployment/<dataset>/production, type model). A version is a git tag
`<dataset>-classifier@vX.Y.Z` on the commit whose dvc.lock holds the promoted bundle; the tag
message carries the cell name and model.keras sha256, which is how a version is found again.
`<dataset>-classifier#prod#N` assigns the stage. Anyone can then fetch a dataset's production
model with `dvc artifacts get . digits-classifier --stage prod`.

A tag needs a commit that holds the promotion: when dvc.lock or the run's files in git (the
metrics, the plot data, deployment/) are not committed, this prints the git command that
commits them and exits 0; the local pointer is already in place (select wrote it). Running it
twice registers nothing new.

Run: reprovision registry [DATASET ...] [--rev HEAD]
"""

import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from data_processing.core import cli
from deployment.release import production
from deployment.server import pointer as server_pointer

STAGE = "prod"


def artifact(dataset: str) -> str:
    """The registry's name of a dataset's production model."""
    return f"{dataset}-classifier"


def git(*args: str, check: bool = True) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=check
    ).stdout.strip()


def gto(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "gto.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gto {' '.join(args)}: {proc.stderr.strip() or proc.stdout}")
    return proc.stdout.strip()


def versions(name: str) -> dict[str, str]:
    """{sha256: version} for every registered version of artifact `name`, from the tags."""
    found = {}
    fmt = "%(refname:short)\t%(contents:subject)"
    tags = git("tag", "-l", f"{name}@v*", f"--format={fmt}", check=False)  # none: no repo
    for line in tags.splitlines():
        tag, _, subject = line.partition("\t")
        for word in subject.split():
            if word.startswith("sha256:"):
                found[word.removeprefix("sha256:")] = tag.partition("@")[2]
    return found


def uncommitted(paths: list[str]) -> list[str]:
    """The paths git sees as changed or untracked (each as git names it, whole)."""
    out = subprocess.run(
        ["git", "status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *paths],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    entries = [e for e in out.split("\0") if e]
    return sorted({e[3:] for e in entries if len(e) > 3 and e[2] == " "})


def declared(name: str, dvc_yaml: Path = Path("dvc.yaml")) -> bool:
    """Whether dvc.yaml's `artifacts:` declares `name` (GTO reads it there)."""
    data = yaml.safe_load(dvc_yaml.read_text()) if dvc_yaml.is_file() else {}
    return name in ((data or {}).get("artifacts") or {})


def register(name: str, entry: dict, rev: str) -> str:
    """Register entry's version of artifact `name` at rev (unless it is) and assign it prod."""
    version = versions(name).get(entry["sha256"])
    if version is None:
        message = f"{entry['name']} sha256:{entry['sha256']} f1:{entry['metrics']['f1_macro']}"
        gto("register", name, rev, "--message", message)
        version = versions(name)[entry["sha256"]]
        print(f"registry: registered {name}@{version} ({entry['name']}) at {rev}")
    assign_prod(name, version, f"{STAGE}: {entry['name']} {entry['version']}")
    return version


def assign_prod(name: str, version: str, message: str) -> None:
    """Assign the stage prod to `version` of artifact `name` unless it has it already."""
    try:
        current = gto("show", f"{name}#{STAGE}", "--ref")
    except RuntimeError:  # no stage assigned yet
        current = ""
    if current == f"{name}@{version}":
        print(f"registry: {name} {version} is already {STAGE}")
        return
    gto("assign", name, "--version", version, "--stage", STAGE, "--message", message)
    print(f"registry: {name} {version} is now {STAGE}")


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument(
        "datasets", nargs="*", help="the datasets to register (default: every one in production)"
    )
    parser.add_argument("--rev", default="HEAD", help="the commit to tag (default HEAD)")
    args = parser.parse_args()
    pointers = (
        [server_pointer.of(d) for d in args.datasets] if args.datasets else server_pointer.every()
    )
    if not pointers:
        sys.exit("error: deployment/: no production pointer yet; run dvc repro first")
    for pointer in pointers:
        dataset = pointer.parent.name
        entry = production.read(pointer)
        if entry is None:
            sys.exit(f"error: {pointer}: no production pointer for {dataset}; run dvc repro first")
        if not declared(artifact(dataset)):
            sys.exit(
                f"error: dvc.yaml: no artifact {artifact(dataset)} under `artifacts:`; add it "
                f"with path deployment/{dataset}/production (reprovision add-dataset does)"
            )
        paths = ["dvc.yaml", "dvc.lock", "models/metrics", "models/plots", "deployment"]
        pending = uncommitted(paths) if args.rev == "HEAD" else []
        if pending:
            message = f"Promote {entry['name']} {entry['version']}"
            print(
                f"registry: {entry['name']} version {entry['version']} is in production "
                f"locally ({pointer}), but {', '.join(pending)} is not committed, so there is "
                "no commit to tag yet. Commit it, then run this again:\n"
                f"    git add {' '.join(map(shlex.quote, paths))} && "
                f"git commit -m {shlex.quote(message)}\n"
                f"    reprovision registry {dataset}"
            )
            continue
        try:
            register(artifact(dataset), entry, git("rev-parse", args.rev))
        except RuntimeError as err:
            sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
