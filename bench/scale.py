"""Scale benchmark: wall time and peak memory of each pipeline stage at 10k and 50k photos.

For each size (`--sizes`, default 10,000 and 50,000) it writes a photo dataset with
tests/photos.py (RGB JPEGs of 160..640 px sides plus a few % each of grayscale, RGBA, palette,
CMYK, 16-bit and EXIF-rotated images; seed 0; generated on every core, not timed as a stage)
into a temporary project folder, with the repository's params.yaml edited to
`datasets: [photos]`, `train.image_size: [S, S]` (`--image-size`, default 96) and
`hparams.quick.epochs: 1` (`models` unchanged). Then it runs each stage there as its own
process, in order, as dvc would:

    normalize  python -m data_processing.normalize datasets/raw/photos datasets/normalized/photos
    validate   python -m data_processing.validate datasets/raw/photos \\
                   datasets/normalized/photos datasets/reports/photos
    shard      python -m data_processing.shard datasets/raw/photos \\
                   datasets/normalized/photos datasets/shards/photos
    train      python -m models.train photos cnn quick      (one epoch)
    evaluate   python -m models.evaluate photos cnn quick

and records, per stage and size:

    wall s        seconds from start to exit of the stage process
    peak MiB      the peak of the SUM of the resident set sizes of the stage's whole process
                  tree (the stage and every child: process-pool workers count), sampled every
                  50 ms with psutil. Pages shared between a parent and its forked workers count
                  once per process, so this errs high; a peak shorter than 50 ms can be missed.
    process MiB   the kernel's exact peak RSS of the largest single process in the tree
                  (GNU time's %M: ru_maxrss over the stage and its waited-for children)

A stage whose module does not exist is reported as missing and the run carries on; a stage
that fails (non-zero exit) is reported with the tail of its stderr, later stages still run.
Targets: every stage's peak MiB <= 2 GiB at the largest size, and peak(largest) /
peak(smallest) <= 1.3 (memory must not grow with the dataset).

Writes bench/results/scale.json (git-ignored) and prints a Markdown table. Exit status: 1 if a
stage failed, else 2 if a target failed, else 0 (missing stages are neither).

Run (from the repository root):
    .venv/bin/python -m bench.scale [--sizes 10000 50000] [--image-size 96] [--min-side 160]
                                    [--max-side 640] [--stages normalize validate ...] [--keep]
"""

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

from bench import common
from tests.photos import write_photo_dataset

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "scale.json"
DATASET = "photos"
SEED = 0
GNU_TIME = "/usr/bin/time"
POLL_S = 0.05
MAX_PEAK_MIB = 2048.0
MAX_PEAK_RATIO = 1.3
RAW, NORM = f"datasets/raw/{DATASET}", f"datasets/normalized/{DATASET}"
STAGES: dict[str, tuple[str, ...]] = {  # stage -> module and arguments, run from the project
    "normalize": ("data_processing.normalize", RAW, NORM),
    "validate": ("data_processing.validate", RAW, NORM, f"datasets/reports/{DATASET}"),
    "shard": ("data_processing.shard", RAW, NORM, f"datasets/shards/{DATASET}"),
    "train": ("models.train", DATASET, "cnn", "quick"),
    "evaluate": ("models.evaluate", DATASET, "cnn", "quick"),
}


def make_project(work: Path, image_size: int) -> None:
    """Write work/params.yaml: the repository's, for one photos dataset and a 1-epoch `quick`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"] = [DATASET]
    params["train"]["image_size"] = [image_size, image_size]
    params["hparams"]["quick"] = {**params["hparams"].get("quick", {}), "epochs": 1}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def command(stage: str) -> str:
    """The stage's command line, as run from the project folder."""
    return " ".join(("python", "-m", *STAGES[stage]))


def _tree_rss(proc: psutil.Process) -> int:
    """Bytes resident in the process's children, recursively (the GNU time wrapper excluded)."""
    total = 0
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass  # exited between the listing and the read
    return total


def run_stage(stage: str, work: Path, timeout: float) -> dict:
    """Run one stage in `work` under GNU time; return status, wall s, peak tree and process MiB."""
    module, *args = STAGES[stage]
    result = {"stage": stage, "command": command(stage)}
    source = ROOT / module.replace(".", "/")
    if not (source.with_suffix(".py").is_file() or (source / "__main__.py").is_file()):
        return {**result, "status": "missing", "detail": f"no module {module} in {ROOT}"}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))),
        "PYTHONDONTWRITEBYTECODE": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    timing = work / f".time_{stage}"
    cmd = [GNU_TIME, "-f", "%e %M", "-o", str(timing), sys.executable, "-m", module, *args]
    peak, done = [0], threading.Event()
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )

    def poll() -> None:
        watched = psutil.Process(proc.pid)
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(watched))
            done.wait(POLL_S)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
        proc.kill()
        stdout, stderr = proc.communicate()
        stderr += f"\n[bench.scale] killed after {timeout:.0f} s"
    wall = time.perf_counter() - start
    done.set()
    poller.join()
    fields = timing.read_text().split() if timing.exists() else []
    timing.unlink(missing_ok=True)
    max_process = int(fields[-1]) / 1024 if len(fields) >= 2 and fields[-1].isdigit() else None
    result |= {
        "status": "ok" if proc.returncode == 0 else "failed",
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "peak_tree_mib": round(peak[0] / 2**20, 1),
        "peak_process_mib": None if max_process is None else round(max_process, 1),
        "stdout_tail": stdout.strip().splitlines()[-3:],
    }
    if proc.returncode != 0:
        result["stderr_tail"] = stderr.strip().splitlines()[-25:]
    return result


def run_size(n: int, args: argparse.Namespace) -> dict:
    """Generate n photos into a new project folder and run every stage there."""
    work = Path(tempfile.mkdtemp(prefix=f"bench_scale_{n}_"))
    try:
        make_project(work, args.image_size)
        workers = os.cpu_count() or 1
        start = time.perf_counter()
        summary = write_photo_dataset(
            work / RAW,
            n,
            min_side=args.min_side,
            max_side=args.max_side,
            seed=SEED,
            modes=True,
            workers=workers,
        )
        generated = time.perf_counter() - start
        print(
            f"scale: {n:,} photos generated in {generated:.1f} s on {workers} processes "
            f"({summary['bytes'] / 2**20:,.0f} MiB) -> {work}"
            + ("" if args.keep else " (removed after)"),
            flush=True,
        )
        stages = {}
        for stage in args.stages:
            stages[stage] = run_stage(stage, work, args.timeout)
            print(f"  {line(stages[stage])}", flush=True)
        return {
            "images": n,
            "work": str(work) if args.keep else None,
            "generate_s": round(generated, 1),
            "generate_workers": workers,
            "dataset": summary,
            "stages": stages,
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def line(r: dict) -> str:
    """One stage result as a progress line."""
    if r["status"] == "missing":
        return f"{r['stage']}: missing ({r['detail']})"
    return (
        f"{r['stage']}: {r['status']} in {r['wall_s']:.1f} s, peak {r['peak_tree_mib']:,.0f} MiB "
        f"(tree), {r['peak_process_mib'] or 0:,.0f} MiB (largest process)"
    )


def targets(results: dict) -> list[dict]:
    """The checks at the largest size and the peak ratio, one row per stage that ran."""
    sizes = [r["images"] for r in results["runs"]]
    first, last = results["runs"][0]["stages"], results["runs"][-1]["stages"]
    rows = []
    for stage in results["stage_order"]:
        big = last.get(stage, {})
        if big.get("status") != "ok":
            rows.append({"target": f"{stage}: ran at {sizes[-1]:,}", "value": big.get("status")})
            continue
        peak = big["peak_tree_mib"]
        rows.append(
            {
                "target": f"{stage}: peak <= {MAX_PEAK_MIB:,.0f} MiB at {sizes[-1]:,}",
                "value": f"{peak:,.0f} MiB",
                "pass": peak <= MAX_PEAK_MIB,
            }
        )
        small = first.get(stage, {})
        if len(sizes) > 1 and small.get("status") == "ok" and small["peak_tree_mib"]:
            ratio = peak / small["peak_tree_mib"]
            rows.append(
                {
                    "target": f"{stage}: peak {sizes[-1]:,} / {sizes[0]:,} <= {MAX_PEAK_RATIO}",
                    "value": f"{ratio:.2f}",
                    "pass": ratio <= MAX_PEAK_RATIO,
                }
            )
    return rows


def _cell(r: dict | None, key: str, fmt: str) -> str:
    if r is None:
        return ""
    if r["status"] == "missing":
        return "missing"
    value = f"{r[key]:{fmt}}" if r.get(key) is not None else "?"
    return value if r["status"] == "ok" else f"{value} (failed)"


def table(results: dict) -> str:
    """The stages as a Markdown table, then the targets."""
    runs = results["runs"]
    sizes = [f"{r['images']:,}" for r in runs]
    head = "| stage |" + "".join(f" wall s {s} | peak MiB {s} |" for s in sizes)
    head += f" peak {sizes[-1]} / {sizes[0]} |" if len(runs) > 1 else ""
    lines = [head, "|---|" + "---:|" * (2 * len(runs) + (len(runs) > 1))]
    for stage in results["stage_order"]:
        cells = [r["stages"].get(stage) for r in runs]
        row = f"| {stage} |" + "".join(
            f" {_cell(c, 'wall_s', '.1f')} | {_cell(c, 'peak_tree_mib', ',.0f')} |" for c in cells
        )
        if len(runs) > 1:
            a, b = cells[0], cells[-1]
            ok = a and b and a["status"] == b["status"] == "ok" and a["peak_tree_mib"]
            row += f" {b['peak_tree_mib'] / a['peak_tree_mib']:.2f} |" if ok else " |"
        lines.append(row)
    lines += ["", "| target | value | |", "|---|---:|---|"]
    for t in results["targets"]:
        verdict = {True: "PASS", False: "FAIL"}.get(t.get("pass"), "n/a")
        lines.append(f"| {t['target']} | {t['value']} | {verdict} |")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = common.parser("scale", __doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--image-size", type=int, default=96, help="train.image_size (square)")
    parser.add_argument("--min-side", type=int, default=160, help="smallest photo side, px")
    parser.add_argument("--max-side", type=int, default=640, help="largest photo side, px")
    parser.add_argument(
        "--stages", nargs="+", choices=list(STAGES), default=list(STAGES), help="in this order"
    )
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per stage")
    parser.add_argument("--keep", action="store_true", help="keep each size's project folder")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if min(args.sizes) < 20 or args.sizes != sorted(args.sizes):
        parser.error("--sizes: ascending, each at least 20")
    if not 32 <= args.min_side <= args.max_side:
        parser.error("--min-side must be at least 32 and at most --max-side")
    if not os.access(GNU_TIME, os.X_OK):
        parser.error(f"{GNU_TIME} (GNU time) not found: apt-get install time")
    args.stages = [s for s in STAGES if s in args.stages]  # pipeline order
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    results = {
        "benchmark": "scale",
        "date": datetime.date.today().isoformat(),
        "sizes": args.sizes,
        "image_size": args.image_size,
        "sides": [args.min_side, args.max_side],
        "seed": SEED,
        "stage_order": args.stages,
        "commands": {s: command(s) for s in args.stages},
        "peak": "max over 50 ms samples of the summed RSS of the stage's process tree "
        "(peak_tree_mib); peak_process_mib = GNU time %M, the largest single process",
        "machine": common.machine(
            memory_gib=round(psutil.virtual_memory().total / 2**30, 1),
            load_average_1m=round(os.getloadavg()[0], 2),
        ),
        "runs": [],
    }
    for n in args.sizes:
        results["runs"].append(run_size(n, args))
    results["targets"] = targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nscale: sizes {args.sizes}, image_size {args.image_size}, sides "
        f"{args.min_side}..{args.max_side}; peak = summed RSS of the stage's process tree\n"
    )
    print(table(results))
    print("\nCommands (each from the project folder; " + RAW + " written by tests/photos.py):")
    for stage in args.stages:
        print(f"  {stage}: {command(stage)}")
    failed = [
        (run["images"], r)
        for run in results["runs"]
        for r in run["stages"].values()
        if r["status"] == "failed"
    ]
    for n, r in failed:
        tail = "\n    ".join(r.get("stderr_tail", []))
        print(f"\nFAILED {r['stage']} at {n:,} (exit {r['rc']}): {r['command']}\n    {tail}")
    print(f"\n-> {args.out}")
    if failed:
        return 1
    return 2 if any(t.get("pass") is False for t in results["targets"]) else 0


if __name__ == "__main__":
    sys.exit(main())
