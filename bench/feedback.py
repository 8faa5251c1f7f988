"""POST /feedback latency against the number of stored records: 1,000 and 100,000.

For each size the feedback database (deployment/server/feedback_store.py) is filled with that
many rows
(as the server writes them, in one transaction; not timed), a real server starts on it
(`python -m deployment.server.serve --bundle BUNDLE --feedback-dir DIR --backend onnx`), and 4
clients each loop: POST /predict (a new 8x8 PNG), then POST /feedback for it. Only the
feedback requests are timed (wall time, client side); 4 x --posts of them after a warm-up.
Target: p50 at 100,000 within 1.5x of p50 at 1,000.

Run: .venv/bin/python -m bench.feedback [--bundle deployment/production] [--posts 100]
"""

import argparse
import io
import json
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from bench.serve import start, stop, wait_ready
from bench.server_memory import post
from deployment.server.feedback_store import COLUMNS, connect

SIZES = (1_000, 100_000)
CLIENTS = 4


def fill(root: Path, count: int, labels: list[str]) -> None:
    """`count` rows as the server writes them (their images are not needed to post more)."""
    db = connect(root)
    rows = []
    for n in range(count):
        rid, split = uuid.uuid4().hex, "test" if n % 5 == 0 else "train"
        record = {
            "request_id": rid,
            "model_name": "m",
            "model_version": "v",
            "labels": json.dumps(labels),
            "predicted_label": labels[0],
            "score": 0.5,
            "predicted_at": 0.0,
            "true_label": labels[n % len(labels)],
            "correct": 0,
            "split": split,
            "file": f"{split}/{rid}.png",
            "image": f"images/{rid}.png",
        }
        rows.append([record[c] for c in COLUMNS])
    db.execute("BEGIN")
    db.executemany(
        f"INSERT INTO feedback ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
        rows,
    )
    db.execute("COMMIT")
    db.close()


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, "L").save(out, "PNG")
    return out.getvalue()


def client(url: str, labels: list[str], worker: int, posts: int, out: list[float]) -> None:
    for i in range(posts + 5):  # 5 warm-up posts, not timed
        status, answer = post(f"{url}/predict", png(worker * 100_000 + i), "image/png")
        assert status == 200, answer
        body = json.dumps(
            {"request_id": answer["request_id"], "true_label": labels[i % 10 % len(labels)]}
        )
        start = time.perf_counter()
        status, answer = post(f"{url}/feedback", body.encode())
        assert status == 200, answer
        if i >= 5:
            out.append(time.perf_counter() - start)


def measure(bundle: Path, count: int, posts: int) -> list[float]:
    labels = json.loads((bundle / "labels.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "feedback"
        fill(root, count, labels)
        args = ["-m", "deployment.server.serve", "--bundle", str(bundle), "--backend", "onnx"]
        args += ["--workers", "1"]  # the figures of bench/README.md: one process
        server = start("server", [*args, "--feedback-dir", str(root)], Path(tmp))
        try:
            wait_ready(server)
            times: list[float] = []
            threads = [
                threading.Thread(target=client, args=(server.url, labels, w, posts, times))
                for w in range(CLIENTS)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            stop(server)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("deployment/production"))
    parser.add_argument("--posts", type=int, default=100, help="timed posts per client")
    args = parser.parse_args()
    p50 = {}
    print("| stored records | posts | p50 ms | p90 ms |")
    print("|---:|---:|---:|---:|")
    for count in SIZES:
        times = sorted(measure(args.bundle, count, args.posts))
        p50[count] = statistics.median(times)
        p90 = times[int(0.9 * len(times))]
        print(f"| {count:,} | {len(times)} | {1000 * p50[count]:.2f} | {1000 * p90:.2f} |")
    ratio = p50[SIZES[1]] / p50[SIZES[0]]
    verdict = "PASS" if ratio <= 1.5 else "FAIL"
    print(f"\np50 at {SIZES[1]:,} / p50 at {SIZES[0]:,}: {ratio:.2f}x (target <= 1.5x): {verdict}")


if __name__ == "__main__":
    main()
