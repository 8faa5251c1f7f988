"""Server memory under crafted requests: all-black 6000x6000 PNGs (35 KB on the wire, 36
million pixels each) in v2 infer requests, sequentially and from 8 clients at once.

Starts `python -m deployment.server.serve --bundle BUNDLE` on 127.0.0.1 with its defaults
(--max-pixels 40,000,000 a request, --decode-slots = the cores) unless flags say otherwise,
samples the server's RSS every 20 ms with psutil, and sends:

    at the limit   1 image a request (36 Mpx): 200
    over           2, 20 and 120 images a request (72, 720, 4,320 Mpx): 413, before decoding

each 4 times in a row, then the same cases from 8 threads at once (4 requests each). It
reports the status counts and the peak RSS over the idle RSS after warm-up, against the
bound the limits give: decode slots x max pixels x 4 bytes (RGBA, the widest decode) plus the
request bodies in flight. The tests (tests/test_server_memory.py) assert the same bound.

Then the request budget's worst cases (`worst`): the largest requests the budget allows,
each from 8 clients at once: --max-images tensors of the model's size (JSON), the same as
PNGs, and --max-images images of the model's size, each 25 times larger than it, as PNGs
(the sent pixels then near --max-pixels). The bound it predicts: model threads x one call's
peak at the budget (measured alone first: what the model holds for --max-images images),
plus decode slots x the largest image's decode, plus 3x the bodies in flight. Concurrency
adds requests, not model calls: the batcher runs at most --model-threads at once.

Run: .venv/bin/python -m bench.server_memory [--bundle deployment/production]
     [--max-pixels N] [--decode-slots N] [--model-threads N] [--backend onnx|tf]
"""

import argparse
import base64
import io
import json
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
from PIL import Image

from bench.serve import start, stop, wait_ready

SIDE = 6000
CASES = {"at the limit": 1, "over (2)": 2, "over (20)": 20, "over (120)": 120}


def black_png(side: int = SIDE, mode: str = "L") -> bytes:
    """An all-black PNG: a few KB that decode to side x side pixels (1 byte each in L)."""
    out = io.BytesIO()
    Image.new(mode, (side, side)).save(out, "PNG")
    return out.getvalue()


def v2_body(png: bytes, count: int) -> bytes:
    """A v2 infer request of `count` copies of the PNG as base64 BYTES."""
    data = [base64.b64encode(png).decode()] * count
    tensor = {"name": "image", "datatype": "BYTES", "shape": [count], "data": data}
    return json.dumps({"inputs": [tensor]}).encode()


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    """POST body; (status, JSON answer)."""
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


class PeakRss:
    """Samples a process's RSS every `interval` seconds in a thread; `.peak` in bytes."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process, self.interval, self.peak = psutil.Process(pid), interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def bound(max_pixels: int, slots: int, bodies: int) -> int:
    """Bytes over idle the limits allow: slots decodes of max_pixels at up to 4 bytes a
    pixel, plus `bodies` bytes of requests in flight (each held about 3 times: raw, parsed,
    decoded base64)."""
    return slots * max_pixels * 4 + 3 * bodies


def run_cases(url: str, pid: int, clients: int, repeat: int = 4) -> dict:
    """Every case `repeat` times from each of `clients` threads; statuses and peak RSS."""
    png = black_png()
    bodies = {case: v2_body(png, count) for case, count in CASES.items()}
    idle = psutil.Process(pid).memory_info().rss
    statuses: dict[str, dict[int, int]] = {case: {} for case in CASES}
    errors: dict[str, str] = {}

    def client(_: int) -> None:
        for _ in range(repeat):
            for case, body in bodies.items():
                status, answer = post(url, body)
                counts = statuses[case]
                counts[status] = counts.get(status, 0) + 1
                if status != 200:
                    errors[case] = answer.get("error", "")

    start = time.perf_counter()
    with PeakRss(pid) as peak, ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    in_flight = clients * max(len(b) for b in bodies.values())
    return {
        "clients": clients,
        "seconds": round(time.perf_counter() - start, 2),
        "idle_rss_mib": round(idle / 2**20, 1),
        "peak_rss_mib": round(peak.peak / 2**20, 1),
        "growth_mib": round((peak.peak - idle) / 2**20, 1),
        "after_rss_mib": round(psutil.Process(pid).memory_info().rss / 2**20, 1),
        "in_flight_bytes": in_flight,
        "statuses": statuses,
        "errors": errors,
    }


def png_of(side: int, rng) -> bytes:
    """A noisy gray PNG (noise does not compress: its bytes are its pixels)."""
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (side, side), dtype="uint8"), "L").save(out, "PNG")
    return out.getvalue()


def worst_bodies(size: tuple[int, int], max_images: int) -> dict[str, bytes]:
    """The budget's largest requests for a model of input `size` (module doc)."""
    import numpy as np

    rng = np.random.default_rng(0)
    h, w = size
    tensor = {"name": "pixels", "datatype": "UINT8", "shape": [max_images, h, w, 1]}
    pixels = {"inputs": [{**tensor, "data": [0] * (max_images * h * w)}]}
    small, large = png_of(h, rng), png_of(5 * h, rng)
    return {
        f"{max_images} tensors": json.dumps(pixels).encode(),
        f"{max_images} PNGs": v2_body(small, max_images),
        f"{max_images} PNGs 5x the side": v2_body(large, max_images),
    }


def peak_growth(url: str, pid: int, bodies: list[bytes], clients: int) -> tuple[float, dict]:
    """Peak RSS growth (bytes) while `clients` threads each send every body twice; statuses."""
    idle = psutil.Process(pid).memory_info().rss
    statuses: dict[int, int] = {}

    def client(_: int) -> None:
        for _ in range(2):
            for body in bodies:
                status = post(url, body)[0]
                statuses[status] = statuses.get(status, 0) + 1

    with PeakRss(pid) as peak, ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    return peak.peak - idle, statuses


def run_worst(url: str, pid: int, size, max_images: int, threads: int, slots: int) -> list:
    """The worst cases: one client per case alone, then 8 at once; rows with the bound."""
    bodies = worst_bodies(size, max_images)
    rows, alone = [], {}
    for case, body in bodies.items():
        post(url, body)  # once first: what any call of it keeps (arenas, buffers) is idle
        alone[case], statuses = peak_growth(url, pid, [body], 1)
        rows.append({"case": case, "clients": 1, "growth": alone[case], "statuses": statuses})
    call_peak = max(alone.values())
    decode = (5 * size[0]) * (5 * size[1]) * 4  # the largest image here, decoded RGBA
    largest = max(len(b) for b in bodies.values())
    bound = threads * call_peak + slots * decode + 3 * 8 * largest
    growth, statuses = peak_growth(url, pid, list(bodies.values()), 8)
    rows.append({"case": "all three", "clients": 8, "growth": growth, "statuses": statuses})
    for row in rows:
        row["bound"] = bound if row["clients"] == 8 else None
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("deployment/production"))
    parser.add_argument("--max-pixels", type=int, default=40_000_000)
    parser.add_argument("--decode-slots", type=int, default=psutil.cpu_count() or 1)
    parser.add_argument("--model-threads", type=int, default=psutil.cpu_count() or 1)
    parser.add_argument("--max-images", type=int, default=256)
    parser.add_argument("--backend", default="onnx")
    args = parser.parse_args()
    flags = ["--max-pixels", str(args.max_pixels), "--decode-slots", str(args.decode_slots)]
    flags += ["--model-threads", str(args.model_threads), "--max-images", str(args.max_images)]
    flags += ["--backend", args.backend, "--workers", "1"]  # the RSS of one process
    with tempfile.TemporaryDirectory() as tmp:
        serve_args = ["-m", "deployment.server.serve", "--bundle", str(args.bundle), *flags]
        server = start("server", [*serve_args, "--feedback-dir", f"{tmp}/feedback"], Path(tmp))
        try:
            wait_ready(server)
            name = json.loads((args.bundle / "lineage.json").read_text())["cell"]
            infer = f"{server.url}/v2/models/{name}/infer"
            post(infer, v2_body(black_png(64), 1))  # warm-up
            results = [run_cases(infer, server.proc.pid, c) for c in (1, 8)]
            spec = json.loads((args.bundle / "params.json").read_text())["spec"]
            size = tuple(spec.get("input_size") or spec["image_size"])
            worst = run_worst(
                infer,
                server.proc.pid,
                size,
                args.max_images,
                args.model_threads,
                args.decode_slots,
            )
        finally:
            stop(server)
    print("| clients | seconds | idle MiB | peak MiB | growth MiB | bound MiB | statuses |")
    print("|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        limit = bound(args.max_pixels, args.decode_slots, r["in_flight_bytes"]) / 2**20
        counts = "; ".join(f"{case}: {s}" for case, s in r["statuses"].items())
        print(
            f"| {r['clients']} | {r['seconds']} | {r['idle_rss_mib']} | {r['peak_rss_mib']} "
            f"| {r['growth_mib']} | {limit:.0f} | {counts} |"
        )
    print(json.dumps(results[-1]["errors"], indent=1))
    print(
        f"\nworst allowed requests ({args.model_threads} model threads, {args.decode_slots} "
        "decode slots):\n"
    )
    print("| case | clients | growth MiB | bound MiB | growth / bound | statuses |")
    print("|---|---:|---:|---:|---:|---|")
    for r in worst:
        shown = f"{r['bound'] / 2**20:.0f}" if r["bound"] else "-"
        ratio = f"{r['growth'] / r['bound']:.2f}" if r["bound"] else "-"
        print(
            f"| {r['case']} | {r['clients']} | {r['growth'] / 2**20:.0f} | {shown} | {ratio} "
            f"| {r['statuses']} |"
        )


if __name__ == "__main__":
    main()
