"""Shard benchmark: the shard stage's throughput against a bare decode floor and the old stage.

Generates N photo-like RGB JPEGs (tests/photos.py, `modes=False`: no PNGs, grayscale or EXIF
turns, so the floor below is a pure JPEG decode; sides 160-640 px, 10 classes) in the seed
folder format in a temporary folder, normalizes them once (data_processing.normalize) and then
times, in one run so the ratios compare:

    floor   a multiprocessing Pool over every core (os.sched_getaffinity) doing only PIL open +
            `draft("RGB", (size, size))` + a bilinear resize to size x size per image, with the
            stage's chunked `imap` (data_processing.shard.CHUNK images a task); returns nothing
            to the parent and writes nothing. Pool start-up is timed, as it is in the stage.
            The least any process-pool decoder at this size can take.
    ours    the shard stage, `data_processing.shard.shard(...)` end to end into an empty
            folder: the headers pass, the decode pass (data_processing.images.load: draft,
            EXIF, mode, one resize) and the records, labels, file lists, samples.json and
            meta.json.
    before  the stage this change replaced, HEAD's data_processing/decode.py reproduced below
            (old_*): serial full decode of every image (data_processing.images.decode), a
            bilinear resize to the most common raw size, `np.savez` of one array per split.

Cases run round-robin (floor, ours, before), `--reps` times; the best run of each counts (the
median is given too). Caches are warm: the JPEGs were just written and are read from the page
cache. Outputs go to a temporary folder on the same disk; their size is measured after each run
and they are deleted before the next case (not timed). Progress bars are off (TQDM_DISABLE).
CPU us/image is the median run's CPU time (user + system) of this process and its reaped pool
workers, per image: what the work costs, less sensitive than wall time to the other users of a
shared machine (not immune: contention slows instructions too).

Targets: ours >= 0.8 x the floor's images/s; ours >= 4 x the old stage's images/s.

Writes bench/results/shard.json (git-ignored) and prints Markdown tables.

Run (from the repository root): .venv/bin/python -m bench.shard [--n 2000] [--size 96]
                                 [--reps 3] [--keep DIR]   (or: make bench)
"""

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # the stage's progress bars; read when tqdm loads

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable  # noqa: E402
from multiprocessing import Pool  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from bench import common  # noqa: E402
from data_processing import schema  # noqa: E402
from data_processing.images import channels_for, decode, read_header  # noqa: E402
from data_processing.normalize import normalize, write  # noqa: E402
from data_processing.shard import CHUNK, ShardParams, _chunks, shard  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "shard.json"
DATASET = "photos"  # the raw folder's name is the dataset name
CLASSES = 10
SIDES = (160, 640)
SEED = 0
# (key, what, limit): images/s ratios checked by targets()
TARGETS = (
    ("ours_vs_floor", "ours >= 0.8 x floor (images/s)", 0.8),
    ("ours_vs_before", "ours >= 4 x before (images/s)", 4.0),
)


def generate(raw: Path, n: int) -> dict:
    """Write n RGB JPEGs (tests/photos.py) into raw, seed folder format; return its summary."""
    from tests.photos import write_photo_dataset  # tests/ is a namespace package

    return write_photo_dataset(
        raw,
        n,
        classes=CLASSES,
        min_side=SIDES[0],
        max_side=SIDES[1],
        modes=False,
        seed=SEED,
        workers=len(os.sched_getaffinity(0)),
    )


# ---- floor: open + draft + resize in a pool, nothing else ----

_floor_job: dict = {}  # set once per worker by _floor_init


def _floor_init(raw_dir: str, size: int) -> None:
    _floor_job.update(raw_dir=Path(raw_dir), size=size)


def _floor_chunk(names: list[str]) -> int:
    raw_dir, size = _floor_job["raw_dir"], _floor_job["size"]
    for name in names:
        with PILImage.open(raw_dir / name) as im:
            im.draft("RGB", (size, size))
            im.resize((size, size), PILImage.BILINEAR)
    return len(names)


def floor(raw_dir: Path, names: list[str], size: int) -> None:
    """Decode and resize every image in a pool over every core; keep nothing."""
    workers = len(os.sched_getaffinity(0))
    with Pool(workers, _floor_init, (str(raw_dir), size)) as pool:
        done = sum(pool.imap(_floor_chunk, _chunks(names, CHUNK)))
    assert done == len(names)


# ---- ours: the shard stage ----


def ours(raw_dir: Path, norm_dir: Path, out_dir: Path, size: int) -> None:
    """The shard stage end to end, every core, records at size x size."""
    out_dir.mkdir(parents=True)
    shard(raw_dir, norm_dir, out_dir, ShardParams(image_size={DATASET: [size, size]}), SEED)


# ---- before: HEAD's data_processing/decode.py, the stage this change removed ----


def old_decode_split(
    raw_dir: Path, dataset: schema.Dataset, channels: int, size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """OLD STAGE (HEAD data_processing/decode.py `decode_split`), unchanged: one split's arrays."""
    n, k = len(dataset.images), len(dataset.categories)
    images = np.zeros((n, size[1], size[0], channels), np.uint8)
    labels = np.zeros((n, k), np.uint8)
    for row, image in enumerate(dataset.images):
        arr = decode(raw_dir / image.file_name, channels)
        if arr.shape[1::-1] != size:
            resized = PILImage.fromarray(arr.squeeze(-1) if channels == 1 else arr)
            arr = np.asarray(resized.resize(size, PILImage.BILINEAR)).reshape(images.shape[1:])
        images[row] = arr
        labels[row, [c - 1 for c in image.labels or ()]] = 1
    return {
        "images": images,
        "labels": labels,
        "file_names": np.array([i.file_name for i in dataset.images]),
        "categories": np.array(dataset.category_names()),
        "label_mode": np.array(dataset.label_mode),
    }


def old_common_format(
    raw_dir: Path, splits: dict[str, schema.Dataset]
) -> tuple[int, tuple[int, int]]:
    """OLD STAGE (HEAD `common_format`), unchanged: (channels, most common (width, height))."""
    images = [i for d in splits.values() for i in d.images]
    modes = {read_header(raw_dir / i.file_name)[2] for i in images}
    size = Counter((i.width, i.height) for i in images).most_common(1)[0][0]
    return channels_for(modes), size


def before(raw_dir: Path, norm_dir: Path, out_dir: Path) -> None:
    """OLD STAGE (HEAD `decode.main` without the staging rename): serial, one .npz per split."""
    out_dir.mkdir(parents=True)
    splits = {p.stem: schema.load(p) for p in sorted(norm_dir.glob("*.json"))}
    channels, size = old_common_format(raw_dir, splits)
    for split, dataset in splits.items():
        np.savez(out_dir / f"{split}.npz", **old_decode_split(raw_dir, dataset, channels, size))


# ---- measurement ----


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its reaped children (pool workers)."""
    own, children = (
        resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(
    cases: dict[str, tuple[Callable[[Path], None], bool]], work: Path, reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, dict]]:
    """Run the cases round-robin `reps` times, each into a fresh work/<case> folder; return
    the wall and CPU seconds of every run and each case's output size (first run)."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    cpu: dict[str, list[float]] = {name: [] for name in cases}
    sizes: dict[str, dict] = {}
    for _ in range(reps):
        for name, (run_case, writes) in cases.items():
            out = work / name
            cpu_start, start = cpu_seconds(), time.perf_counter()
            run_case(out)
            times[name].append(time.perf_counter() - start)
            cpu[name].append(cpu_seconds() - cpu_start)  # the pool's workers are reaped by now
            if writes:
                sizes.setdefault(name, output_sizes(out))
            shutil.rmtree(out, ignore_errors=True)
    return times, cpu, sizes


def output_sizes(out: Path) -> dict:
    """Bytes on disk of an output folder: total, and the training arrays alone (records or
    .npz) without meta.json, file lists, labels and samples.json."""
    arrays = [p for p in out.iterdir() if p.suffix in (".rec", ".npz")]
    return {"total": folder_bytes(out), "arrays": sum(p.stat().st_size for p in arrays)}


def summarize(
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    sizes: dict[str, dict],
    n: int,
    jpeg: int,
) -> dict:
    """Rows per case (best, median, images/s, ratio to the floor, CPU, cache size), targets."""
    rows = []
    floor_best, floor_median = min(times["floor"]), statistics.median(times["floor"])
    floor_cpu = statistics.median(cpu["floor"])
    for name, runs in times.items():
        best, median = min(runs), statistics.median(runs)
        cpu_median = statistics.median(cpu[name])
        size = sizes.get(name)
        rows.append(
            {
                "case": name,
                "runs_s": [round(t, 3) for t in runs],
                "best_s": round(best, 3),
                "median_s": round(median, 3),
                "images_per_s": round(n / best, 1),
                "vs_floor": round(floor_best / best, 3),
                "median_vs_floor": round(floor_median / median, 3),
                "cpu_runs_s": [round(t, 3) for t in cpu[name]],
                "cpu_median_s": round(cpu_median, 3),
                "cpu_us_per_image": round(cpu_median / n * 1e6),
                "cpu_vs_floor": round(floor_cpu / cpu_median, 3),
                "cache_bytes": size["total"] if size else None,
                "array_bytes": size["arrays"] if size else None,
                "cache_vs_jpeg": round(size["total"] / jpeg, 3) if size else None,
            }
        )
    best = {r["case"]: r["best_s"] for r in rows}
    median = {r["case"]: r["median_s"] for r in rows}
    ratios = {
        "ours_vs_floor": (best["floor"] / best["ours"], median["floor"] / median["ours"]),
        "ours_vs_before": (best["before"] / best["ours"], median["before"] / median["ours"]),
    }
    targets = [
        {
            "target": what,
            "value": round(ratios[key][0], 3),
            "median_value": round(ratios[key][1], 3),
            "limit": limit,
            "pass": ratios[key][0] >= limit,
        }
        for key, what, limit in TARGETS
    ]
    return {"rows": rows, "targets": targets}


def table(result: dict) -> str:
    """Return the rows and the targets as Markdown tables."""
    jpeg = result["jpeg_bytes"]
    lines = [
        "| case | best s | median s | images/s | vs floor (best / median) | CPU us/image | "
        "vs floor by CPU | cache MiB | cache / JPEG |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        cache = "-" if r["cache_bytes"] is None else f"{r['cache_bytes'] / 2**20:,.1f}"
        ratio = "-" if r["cache_vs_jpeg"] is None else f"{r['cache_vs_jpeg']:.2f}x"
        lines.append(
            f"| {r['case']} | {r['best_s']:.2f} | {r['median_s']:.2f} | "
            f"{r['images_per_s']:,.0f} | {r['vs_floor']:.2f}x / {r['median_vs_floor']:.2f}x | "
            f"{r['cpu_us_per_image']:,} | {r['cpu_vs_floor']:.2f}x | {cache} | {ratio} |"
        )
    lines.append(f"| (JPEG files) | | | | | | | {jpeg / 2**20:,.1f} | 1.00x |")
    lines += ["", "| target | best | median | |", "|---|---:|---:|---|"]
    for t in result["targets"]:
        verdict = "PASS" if t["pass"] else "FAIL"
        lines.append(
            f"| {t['target']} | {t['value']:.2f}x | {t['median_value']:.2f}x | {verdict} |"
        )
    return "\n".join(lines)


def run(work: Path, n: int, size: int, reps: int) -> dict:
    """Generate and normalize the photos under `work`, time every case, return the results."""
    raw, norm = work / "raw" / DATASET, work / "normalized" / DATASET
    start = time.perf_counter()
    summary = generate(raw, n)
    generated_s = time.perf_counter() - start
    write(normalize(raw, "seed"), norm)
    names = [i.file_name for p in sorted(norm.glob("*.json")) for i in schema.load(p).images]
    jpeg = sum(os.path.getsize(raw / name) for name in names)
    cases = {
        "floor": (lambda out: floor(raw, names, size), False),
        "ours": (lambda out: ours(raw, norm, out, size), True),
        "before": (lambda out: before(raw, norm, out), True),
    }
    load_before = os.getloadavg()[0]
    times, cpu, sizes = measure(cases, work / "out", reps)
    result = {
        "benchmark": "shard",
        "date": datetime.date.today().isoformat(),
        "images": n,
        "image_sides": list(SIDES),
        "stored_size": [size, size],
        "workers": len(os.sched_getaffinity(0)),
        "reps": reps,
        "statistic": "best of reps, round-robin order (medians too)",
        "caches": "warm",
        "generate_s": round(generated_s, 2),
        "jpeg_bytes": jpeg,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": common.machine(cpus_usable=len(os.sched_getaffinity(0))),
        "photos": {k: summary[k] for k in ("splits", "modes", "bytes")},
    }
    result.update(summarize(times, cpu, sizes, n, jpeg))
    return result


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = common.parser("shard", __doc__)
    parser.add_argument("--n", type=int, default=2000, help="photos to generate")
    parser.add_argument("--size", type=int, default=96, help="stored side (size x size)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each case")
    common.add_keep(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if args.n < 2 * CLASSES or args.reps < 1 or args.size < 1:
        parser.error(f"--n must be at least {2 * CLASSES}, --reps and --size at least 1")
    common.check_keep(parser, args.keep)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_shard_"))
    try:
        result = run(work, args.n, args.size, args.reps)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"shard: {args.n:,} RGB JPEGs ({SIDES[0]}-{SIDES[1]} px sides) -> {args.size}x"
        f"{args.size}, {result['workers']} workers, best of {args.reps} (round-robin, warm "
        f"caches); 1-min load {result['load_average_1min'][0]} -> "
        f"{result['load_average_1min'][1]}\n"
    )
    print(table(result))
    print(f"\n-> {args.out}" + (f"; data kept in {args.keep}" if args.keep else ""))


if __name__ == "__main__":
    main()
