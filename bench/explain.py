"""POST /explain latency against POST /predict on the same server, per architecture.

For each bundle (default: models/runs/digits-<model>-base/bundle for every model of the zoo
that has one) a server starts (`python -m deployment.server.serve --bundle B --workers 1`,
backend auto: onnx) and one client, on a kept-alive connection, posts the dataset's first
raw test files as image/png bodies: one /explain first (cold: it loads TensorFlow and
model.keras), then --reps rounds of /predict and /explain of the same file, alternately, so
both see the same machine load. Wall time on the client, send to last byte; median and p90
per endpoint; the ratio is /explain's median over /predict's. Then, in this process, the
failure grid's share of evaluate: its one `explain` call on 16 test images (eager).

A bundle exported before explanations (no code/models/common/explain.py) is copied to a
temporary folder and given the repo's; the bundle itself is never written.
Writes bench/results/explain.json (git-ignored) and prints a table.

Run (from the repository root): .venv/bin/python -m bench.explain [--reps 50]
    [--bundle models/runs/digits-cnn-base/bundle ...]
"""

import http.client
import io
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine, parser
from bench.serve import start, stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "explain.json"
EXPLAIN = ROOT / "models" / "common" / "explain.py"
FILES = 20  # distinct test files, posted in turn
GRID = 16  # evaluate's n_failures default


def _bundles() -> list[Path]:
    import models

    found = [ROOT / f"models/runs/digits-{m}-base/bundle" for m in models.available()]
    return [b for b in found if (b / "model.keras").is_file()]


def explainable(bundle: Path, work: Path) -> Path:
    """`bundle`, or a copy under `work` with the repo's explain.py when it has none."""
    if (bundle / "code/models/common/explain.py").is_file():
        return bundle
    copy = Path(shutil.copytree(bundle, work / bundle.parent.name, ignore=_no_saved_model))
    shutil.copy2(EXPLAIN, copy / "code/models/common/explain.py")
    return copy


def _no_saved_model(folder: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("saved_model", "triton", "kserve")]  # not served


def raw_test_files(bundle: Path, n: int) -> list[bytes]:
    """The bytes of the dataset's first n raw test files (shards/<dataset>/test-files.txt)."""
    dataset = json.loads((bundle / "lineage.json").read_text()).get("dataset", "digits")
    listed = (ROOT / "datasets/shards" / dataset / "test-files.txt").read_text().split()
    return [(ROOT / "datasets/raw" / dataset / f).read_bytes() for f in listed[:n]]


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> float:
    """Seconds for one POST of an image/png body; AssertionError unless 200."""
    started = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "image/png"})
    response = conn.getresponse()
    answer = response.read()
    assert response.status == 200, answer[:300]
    return time.perf_counter() - started


def _summary(seconds: list[float]) -> dict:
    ms = sorted(1000 * s for s in seconds)
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[len(ms) * 9 // 10], 2),
    }


def over_http(bundle: Path, files: list[bytes], reps: int, work: Path) -> dict:
    """Cold /explain, then `reps` alternating /predict and /explain of the same file."""
    args = ["-m", "deployment.server.serve", "--bundle", str(bundle), "--workers", "1"]
    args += ["--feedback-dir", str(work / f"feedback-{bundle.parent.name}")]
    server = start(bundle.parent.name, args, work)
    try:
        wait_ready(server)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
        cold = _post(conn, "/explain", files[0])
        times = {"/predict": [], "/explain": []}
        for i in range(reps):
            for path in times:
                times[path].append(_post(conn, path, files[i % len(files)]))
        conn.close()
    finally:
        stop(server)
    predict, explain = _summary(times["/predict"]), _summary(times["/explain"])
    ratio = explain["median_ms"] / predict["median_ms"]
    return {
        "cold_explain_s": round(cold, 2),
        "predict": predict,
        "explain": explain,
        "ratio": round(ratio, 1),
    }


def grid_seconds(bundle: Path, files: list[bytes]) -> tuple[str, float]:
    """(method, seconds) of evaluate's one `explain` call on GRID test images, the model
    loaded (eager: the Explainer's sub-models are built in it)."""
    import keras
    from PIL import Image

    from data_processing.images import shrink
    from models.common.explain import explain

    size = json.loads((bundle / "params.json").read_text())["spec"].get("input_size")
    model = keras.saving.load_model(bundle / "model.keras", compile=False)
    channels = int(model.inputs[0].shape[-1])
    decoded = [shrink(Image.open(io.BytesIO(f)), channels, size) for f in files]
    images = np.stack([decoded[i % len(decoded)] for i in range(GRID)])
    model(images, training=False)  # TensorFlow's first-op start-up is not explain's
    started = time.perf_counter()
    _, method = explain(model, images)
    return method, time.perf_counter() - started


def table(rows: list[dict]) -> str:
    head = (
        "| bundle | method | /predict median (p90) ms | /explain median (p90) ms | ratio "
        f"| first /explain s | {GRID} images in evaluate s |\n|---|---|---:|---:|---:|---:|---:|"
    )
    lines = [
        f"| {r['bundle']} | {r['method']} | {r['predict']['median_ms']} ({r['predict']['p90_ms']})"
        f" | {r['explain']['median_ms']} ({r['explain']['p90_ms']}) | {r['ratio']}x"
        f" | {r['cold_explain_s']} | {r['grid_s']:.3f} |"
        for r in rows
    ]
    return "\n".join([head, *lines])


def main(argv: list[str] | None = None) -> None:
    cli = parser("explain", __doc__)
    cli.add_argument("--bundle", type=Path, action="append", help="default: every digits base")
    cli.add_argument("--reps", type=int, default=50, help="rounds of /predict and /explain")
    cli.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = cli.parse_args(argv)
    from models.common.quiet import import_tensorflow

    import_tensorflow()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_explain_") as tmp:
        for bundle in args.bundle or _bundles():
            served = explainable(bundle.resolve(), Path(tmp))
            files = raw_test_files(served, FILES)
            method, grid = grid_seconds(served, files)
            row = {"bundle": bundle.parent.name, "method": method, "grid_s": round(grid, 4)}
            rows.append(row | over_http(served, files, args.reps, Path(tmp)))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    results = {"machine": machine(), "reps": args.reps, "rows": rows}
    results["command"] = "python -m bench.explain " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nexplain: {args.reps} rounds per bundle -> {args.out}\n\n{table(rows)}")


if __name__ == "__main__":
    main()
