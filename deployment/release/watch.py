"""Continuous training: retrain and promote when labelled feedback or a dataset changes.

Each check (every --interval seconds, or once with --once):
  1. counts accepted feedback records (the rows of datasets/raw/feedback/feedback.sqlite3,
     written by the server's POST /feedback, that a reviewer or agreement accepted: GET
     /review, deployment/server/review_store.py) and hashes the dataset declarations
     (datasets/**/*.dvc and params.yaml `datasets`); pending and rejected ones never train;
  2. when at least params `feedback.min_records` records were accepted since the last cycle,
     or a dataset was added or changed: exports those records as a seed-format dataset
     (feedback_export.py), `dvc add datasets/raw/feedback` (a versioned snapshot of it;
     .dvcignore leaves out the database and the image store), then
     `dvc exp run -n <name> -S feedback.snapshot=<its md5>`: the whole pipeline, in which
     normalize merges the feedback into the train split of params `feedback.dataset` (the
     snapshot param is its signal to re-run), the changed cells retrain and evaluate, and
     select promotes the best candidate only when it passes the gate and beats production
     by `select.margin`;
  3. on a promotion select rewrites deployment/<dataset>/production.json (params
     `feedback.dataset`'s), which a running server
     (`python -m deployment.server.serve`, which watches it) loads, warms up, checks and swaps in.

The watch is idempotent and survives restarts: what it has acted on is kept in
deployment/watch.json (written atomically after each finished cycle), so a check with
nothing new does nothing, and a cycle that failed or was killed runs again at the next
check. A lock (deployment/watch.lock) keeps two watches from running at once. A failed
cycle is reported with the command's output and retried at the next check.

Run: reprovision watch [--once] [--interval 60] [--min-records N]
"""

import fcntl
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

from data_processing.core import cli
from data_processing.core.io import write_json
from data_processing.core.params import load_params, read_params
from data_processing.feedback import FeedbackParams
from deployment.release import feedback_export as feedback

FEEDBACK = Path("datasets/raw/feedback")
STATE = Path("deployment/watch.json")
LOCK = Path("deployment/watch.lock")


def gate_report() -> Path:
    """The gate report of the dataset the feedback trains (params `feedback.dataset`)."""
    dataset = load_params("feedback", FeedbackParams).dataset
    return Path("deployment") / dataset / "gate.json"


def trained_labels() -> list[str] | None:
    """The labels of the production model of params `feedback.dataset` (only feedback on a
    model of those labels joins it); None before its first promotion."""
    labels = gate_report().parent / "production" / "labels.json"
    return json.loads(labels.read_text()) if labels.is_file() else None


def labelled_records(folder: Path = FEEDBACK) -> int:
    """How many feedback records on the trained dataset's model were accepted in review."""
    return feedback.count(folder, trained_labels())


def datasets_digest() -> str:
    """A hash of what declares the datasets: every .dvc file under datasets/ and the list."""
    digest = hashlib.sha256(json.dumps(read_params().get("datasets")).encode())
    for path in sorted(Path("datasets").rglob("*.dvc")):
        if path != FEEDBACK.with_suffix(".dvc"):  # the watch's own snapshot
            digest.update(path.as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def read_state() -> dict:
    return json.loads(STATE.read_text()) if STATE.is_file() else {}


def pending(state: dict, min_records: int) -> tuple[str | None, int, str]:
    """(why a cycle is due, or None; the record count; the datasets digest) right now. With
    no state yet (a first start) the datasets as they are count as seen."""
    records, digest = labelled_records(), datasets_digest()
    new = records - state.get("records", 0)
    if digest != state.get("datasets", digest):
        return "a dataset was added or changed", records, digest
    if new >= min_records:
        return f"{new} new accepted feedback records (at least {min_records})", records, digest
    return None, records, digest


def run(*command: str) -> None:
    """Run a command, its output streamed to ours; raise on failure."""
    print(f"watch: $ {' '.join(command)}", flush=True)
    proc = subprocess.run(command, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}")


def cycle(reason: str, records: int) -> dict:
    """Snapshot the feedback, run the pipeline as an experiment, report the decision."""
    name = time.strftime("watch-%Y%m%d-%H%M%S", time.gmtime())
    print(f"watch: {reason}: retraining as experiment {name}", flush=True)
    snapshot = []
    if records:
        feedback.export(FEEDBACK, trained_labels())
        run("dvc", "add", "-q", FEEDBACK.as_posix())
        # normalize depends on datasets/raw/<dataset> only (the feedback folder may not exist):
        # the snapshot's hash, a param, is what makes it merge the new feedback
        md5 = yaml.safe_load(FEEDBACK.with_suffix(".dvc").read_text())["outs"][0]["md5"]
        snapshot = ["-S", f"feedback.snapshot={md5}"]
    run("dvc", "exp", "run", "-n", name, *snapshot)
    gate = json.loads(gate_report().read_text())
    verdict = "promoted" if gate.get("promoted") else "kept production"
    print(f"watch: {name}: {verdict}: {gate.get('reason')}", flush=True)
    return {"experiment": name, "promoted": bool(gate.get("promoted")), "reason": gate["reason"]}


def check(min_records: int) -> bool:
    """One check; True when a cycle ran and finished."""
    state = read_state()
    reason, records, digest = pending(state, min_records)
    if reason is None:
        if "datasets" not in state:  # first start: remember what is there now
            write_json(STATE, {**state, "records": records, "datasets": digest})
        return False
    result = cycle(reason, records)
    # what was seen before the cycle: a dataset changed during it triggers the next one
    write_json(STATE, {"records": records, "datasets": digest, "last": result})
    return True


def main() -> None:
    parser = cli.make_parser(__doc__)
    parser.add_argument("--once", action="store_true", help="check once, then exit")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between checks")
    parser.add_argument("--min-records", type=int, help="default: params feedback.min_records")
    args = parser.parse_args()
    min_records = args.min_records
    if min_records is None:
        min_records = load_params("feedback", FeedbackParams).min_records
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            sys.exit(f"error: {LOCK}: another watch is running")
        while True:
            try:
                check(min_records)
            except (RuntimeError, OSError, ValueError) as err:
                print(f"watch: cycle failed, retried at the next check: {err}", file=sys.stderr)
                if args.once:
                    sys.exit(1)
            if args.once:
                return
            time.sleep(args.interval)


if __name__ == "__main__":
    main()
