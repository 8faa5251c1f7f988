"""Ingest benchmark: the seed code's naive pickle loop against the normalize and shard stages.

Generates N small PNGs (default 20,000; 8x8 to 28x28, grayscale or RGB, 10 classes) in the
seed folder format (`<root>/train/`, `<root>/test/`, each with a `groundtruth.csv` of
`filename,label`) in a temporary folder, then times, in one run so the ratios compare:

    naive      per split: read the CSV, open and decode every PNG with PIL, `np.asarray` into a
               list, `pickle.dump` {'img': [...], 'label': [...]} (what the seed code did)
    normalize  `data_processing.normalize.normalize` + `write`: image headers only, COCO JSON
    normalize (full decode)
               the same stage with each header read swapped for a full pixel decode: what
               normalizing would cost without header-only reads
    shard      the shard stage as `data_processing.shard.main` runs it: params.yaml `shard`
               (records at `train.image_size`, a process pool over every core), a headers
               pass, a full decode + resize of every image, fixed-length records per split
               (it replaced the old decode stage; bench/shard.py measures it on photos)

Steps run round-robin, in that order, `--reps` times; the best time of each counts.
Caches are warm: the images were just written, so reads come from the page cache (dropping it
needs root and would disturb a shared machine). Generation is not timed. Pickles are written,
never loaded. The stages' progress bars are off (TQDM_DISABLE).

Writes bench/results/ingest.json (git-ignored) and prints a table.

Run (from the repository root): .venv/bin/python -m bench.ingest [--n 20000] [--reps 3]
                                 [--keep DIR]   (or: make bench)
"""

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # the shard stage's progress bars; read when tqdm loads

import argparse  # noqa: E402
import csv  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import multiprocessing  # noqa: E402
import pickle  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from bench import common  # noqa: E402
from data_processing.core.io import staged_dir  # noqa: E402
from data_processing.core.params import BaseParams, load_params  # noqa: E402
from data_processing.normalize import normalize, write  # noqa: E402
from data_processing.shard import ShardParams, shard  # noqa: E402
from data_processing.sources import _common  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
DATASET = "synthetic"  # the raw folder's name is the dataset name
CLASSES = 10
TEST_FRACTION = 0.2
# (path, side, channels, label, seed) for one PNG to write
Spec = tuple[str, int, int, int, int]


def _write_pngs(specs: list[Spec]) -> None:
    """Write one chunk of PNGs: a class-dependent gradient plus noise, fast (low) compression."""
    for path, side, channels, label, seed in specs:
        rng = np.random.default_rng(seed)
        ramp = np.linspace(0, 25 * label, side, dtype=np.float64)
        base = ramp[None, :, None] + ramp[:, None, None] * (label % 3)
        noise = rng.integers(0, 64, (side, side, channels))
        pixels = np.clip(base + noise, 0, 255).astype(np.uint8)
        mode = "L" if channels == 1 else "RGB"
        image = PILImage.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)
        image.save(path, compress_level=1)


def generate(root: Path, n: int, seed: int = 0) -> None:
    """Write `n` PNGs and a groundtruth.csv per split into `root` (seed folder format)."""
    rng = np.random.default_rng(seed)
    n_test = max(1, round(n * TEST_FRACTION))
    specs: list[Spec] = []
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for i in range(n):
        split = "test" if i < n_test else "train"
        name, label = f"img_{i:06d}.png", int(rng.integers(CLASSES))
        side, channels = int(rng.integers(8, 29)), int(rng.choice((1, 3)))
        specs.append((str(root / split / name), side, channels, label, seed * n + i))
        rows[split].append((name, label))
    for split, split_rows in rows.items():
        (root / split).mkdir(parents=True)
        with (root / split / "groundtruth.csv").open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["filename", "label"])
            writer.writerows(split_rows)
    workers = min(4, os.cpu_count() or 1)
    chunks = [specs[i :: workers * 8] for i in range(workers * 8)]
    with multiprocessing.Pool(workers) as pool:
        pool.map(_write_pngs, chunks)


def naive_ingest(raw_dir: Path, out_dir: Path) -> None:
    """The seed code's loop: decode every image into a list and pickle it, per split."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        data: dict[str, list] = {"img": [], "label": []}
        with (raw_dir / split / "groundtruth.csv").open(newline="") as f:
            for row in csv.DictReader(f):
                with PILImage.open(raw_dir / split / row["filename"]) as im:
                    data["img"].append(np.asarray(im))
                data["label"].append(row["label"])
        with (out_dir / f"{split}.pkl").open("wb") as f:
            pickle.dump(data, f)


def normalize_stage(raw_dir: Path, out_dir: Path) -> None:
    """The normalize stage as a library call: headers only, one COCO JSON per split."""
    write(normalize(raw_dir, "seed"), out_dir)


def _decoded_size(path) -> tuple[int, int, str]:
    """What read_header returns, learnt the expensive way: a full pixel decode."""
    with PILImage.open(path) as im:
        im.load()
        return im.width, im.height, im.mode


def normalize_full_decode(raw_dir: Path, out_dir: Path) -> None:
    """The same normalize stage with every header read replaced by a full decode: what
    normalizing would cost if it decoded pixels (the "no full decode" claim's baseline)."""
    original = _common.read_header
    _common.read_header = _decoded_size
    try:
        normalize_stage(raw_dir, out_dir)
    finally:
        _common.read_header = original


def shard_stage(
    raw_dir: Path, norm_dir: Path, out_dir: Path, params: ShardParams, seed: int
) -> None:
    """The shard stage as `data_processing.shard.main` runs it (staged folder, then renamed)."""
    with staged_dir(out_dir) as tmp:
        shard(raw_dir, norm_dir, tmp, params, seed)


def measure(steps: dict[str, Callable[[], None]], reps: int) -> dict[str, list[float]]:
    """Run the steps round-robin `reps` times; return the wall seconds of every run per step."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def summarize(times: dict[str, list[float]], n: int) -> list[dict]:
    """Return one row per step: best and median seconds, images/s, speed-up over naive."""
    naive_best, naive_median = min(times["naive"]), statistics.median(times["naive"])
    rows = []
    for name, runs in times.items():
        best, median = min(runs), statistics.median(runs)
        rows.append(
            {
                "step": name,
                "runs_s": [round(t, 4) for t in runs],
                "best_s": round(best, 4),
                "median_s": round(median, 4),
                "images_per_s": round(n / best),
                "ratio_vs_naive": round(naive_best / best, 2),
                "median_ratio_vs_naive": round(naive_median / median, 2),
            }
        )
    return rows


def table(rows: list[dict]) -> str:
    """Return the rows as a Markdown table."""
    lines = [
        "| step | best s | median s | images/s | ratio vs naive (best / median) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['step']} | {r['best_s']:.3f} | {r['median_s']:.3f} | "
            f"{r['images_per_s']:,} | {r['ratio_vs_naive']:.2f}x / "
            f"{r['median_ratio_vs_naive']:.2f}x |"
        )
    return "\n".join(lines)


def run(work: Path, n: int, reps: int) -> dict:
    """Generate the data under `work`, time every step and return the results."""
    raw, out = work / "raw" / DATASET, work / "out"
    start = time.perf_counter()
    generate(raw, n)
    generated_s = time.perf_counter() - start
    # params as the stage reads them, once: shard (records at train.image_size) and base.seed
    params, seed = load_params("shard", ShardParams), load_params("base", BaseParams).seed
    steps = {
        "naive": lambda: naive_ingest(raw, out / "naive"),
        "normalize": lambda: normalize_stage(raw, out / "normalized"),
        "normalize (full decode)": lambda: normalize_full_decode(raw, out / "normalized_full"),
        "shard": lambda: shard_stage(raw, out / "normalized", out / "shards", params, seed),
    }
    rows = summarize(measure(steps, reps), n)
    return {
        "benchmark": "ingest",
        "date": datetime.date.today().isoformat(),
        "images": n,
        "reps": reps,
        "statistic": "best of reps, round-robin order",
        "caches": "warm",
        "generate_s": round(generated_s, 2),
        "machine": common.machine(),
        "steps": rows,
    }


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = common.parser("ingest", __doc__)
    parser.add_argument("--n", type=int, default=20_000, help="images to generate")
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each step")
    common.add_keep(parser)
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if args.n < 2 or args.reps < 1:
        parser.error("--n must be at least 2 and --reps at least 1")
    common.check_keep(parser, args.keep)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    try:
        results = run(work, args.n, args.reps)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"ingest: {args.n:,} PNGs, best of {args.reps} (round-robin, warm caches), "
        f"generated in {results['generate_s']} s (not timed)\n"
    )
    print(table(results["steps"]))
    print(f"\n-> {args.out}" + (f"; data kept in {args.keep}" if args.keep else ""))


if __name__ == "__main__":
    main()
