"""Serving against the servers users would pick instead: KServe's ModelServer, Seldon
MLServer and a naive FastAPI server, each wrapping the same model.onnx (bench/peer_servers.py:
onnxruntime, one intra-op and one inter-op thread as ours, the bundle's temperature applied),
in one run with ours, interleaved, loaded with wrk on 127.0.0.1.

KServe (kserve==0.21.0) and MLServer (mlserver==1.7.1) install from the package index into
their own venvs under --venvs (made once, kept); naive runs in ours (FastAPI, uvicorn).

Groups (servers started per group, each case round-robin over the servers, --reps times;
the figure is the median req/s of the reps; p99 the median too):
    digits     the digits cnn bundle; OIP v2 JSON UINT8 pixels: 1 image at c=1, 8, 32, and
               32 images a request at c=8; also the bare ASGI constant (bench/bare_asgi.py)
    photo64    a cnn at 64x64 RGB (bench/photo_bundle.py); one 640x480 JPEG of about 60 KB
               a request, base64 BYTES in OIP v2 JSON (ours also multipart /predict), c=8
    photo224   a mobilenet at 224x224 RGB; the same JPEG, c=8 and 32
    2 workers  each server with 2 workers: digits 1 image and photo224, c=8
Floors measured in the same run: the composed ceiling for small tensors, 1 / (one bare
request + one model call), and for JPEGs decode (PIL draft + resize) plus the model call per
image on all cores, with no HTTP. Every server's answer is checked against ours first.

Writes bench/results/peers.json (git-ignored), prints tables and PASS/FAIL per target.

Run (from the repository root): .venv/bin/python -m bench.peers [--duration 5] [--reps 3]
    [--venvs .venv-peers] [--photo-work DIR (keep and reuse the photo bundles)]
"""

import base64
import datetime
import io
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import common
from bench.peer_servers import OnnxModel
from bench.photo_bundle import build as build_photo_bundle
from bench.serve import BARE, ROOT, Server, cpu_seconds, row, stop, wait_idle, wait_ready, wrk

RESULTS = ROOT / "bench/results/peers.json"
PEERS = {"kserve": "kserve==0.21.0", "mlserver": "mlserver==1.7.1"}
SERVERS = ("ours", "kserve", "mlserver", "naive")
DIGITS = ROOT / "models/runs/digits-cnn-base/bundle"
PEER_SCRIPT = ROOT / "bench/peer_servers.py"


def venv(venvs: Path, kind: str) -> Path:
    """The peer's python, its venv made (and the package installed) when missing."""
    python = venvs / kind / "bin/python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venvs / kind)], check=True)
        pins = [PEERS[kind], "onnxruntime==" + common_version("onnxruntime"), "pillow"]
        if kind == "mlserver":  # 1.7.1's parallel workers call asyncio.get_event_loop()
            pins.append("uvloop<0.21")  # outside a loop, which uvloop 0.21+ refuses
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pins], check=True)
    return python


def common_version(package: str) -> str:
    from importlib import metadata

    return metadata.version(package)


def free_ports(n: int) -> int:
    """A port p with p .. p+n-1 free (the peers take the next ones for gRPC and metrics)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        try:
            for p in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue


def start(key: str, cmd: list[str], work: Path) -> Server:
    port, log = free_ports(3), work / f"{key}.log"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*cmd, "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    return Server(key, port, proc, log)


def commands(bundle: Path, name: str, workers: int, work: Path, venvs: Path) -> dict:
    ours = [sys.executable, "-m", "deployment.server.serve", "--bundle", str(bundle)]
    ours += ["--backend", "onnx", "--workers", str(workers)]
    ours += ["--feedback-dir", str(work / f"fb-{name}-{workers}")]
    peer = ["--bundle", str(bundle), "--name", name, "--workers", str(workers)]
    return {
        "ours": ours,
        "kserve": [str(venv(venvs, "kserve")), str(PEER_SCRIPT), "kserve", *peer],
        "mlserver": [str(venv(venvs, "mlserver")), str(PEER_SCRIPT), "mlserver", *peer]
        + ["--work", str(work / f"ml-{name}-{workers}")],
        "naive": [sys.executable, str(PEER_SCRIPT), "naive", *peer],
    }


def bodies(bundle: Path, work: Path, jpeg: bytes | None) -> dict[str, tuple[Path, str]]:
    """Request bodies by load name: (file, content type)."""
    out = {}
    if jpeg is None:
        from bench.serve import request_body

        one = request_body(bundle)
        tensor = one["inputs"][0]
        many = {**tensor, "shape": [32, *tensor["shape"][1:]], "data": tensor["data"] * 32}
        for key, body in (("1 image", one), ("32 images", {"inputs": [many]})):
            (work / f"{key}.json").write_text(json.dumps(body))
            out[key] = (work / f"{key}.json", "application/json")
        return out
    image = {"name": "image", "datatype": "BYTES", "shape": [1]}
    body = {"inputs": [{**image, "data": [base64.b64encode(jpeg).decode()]}]}
    (work / "jpeg.json").write_text(json.dumps(body))
    boundary = "reprovisionbench"
    form = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + jpeg
        + f"\r\n--{boundary}--\r\n".encode()
    )
    (work / "jpeg.form").write_bytes(form)
    out["jpeg"] = (work / "jpeg.json", "application/json")
    out["jpeg multipart"] = (work / "jpeg.form", f"multipart/form-data; boundary={boundary}")
    return out


def photo_jpeg(seed: int = 0) -> bytes:
    """A 640x480 photo-like JPEG of about 60 KB: smooth shapes, texture and sensor noise."""
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:480, 0:640]
    base = np.stack([128 + 80 * np.sin(x / (40 + 20 * c) + y / 90 + c) for c in range(3)], -1)
    noise = rng.normal(0, 14, base.shape)
    im = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")
    im = im.filter(ImageFilter.GaussianBlur(0.6))
    for quality in range(90, 40, -5):
        buffer = io.BytesIO()
        im.save(buffer, "JPEG", quality=quality)
        if buffer.tell() <= 64_000:
            break
    return buffer.getvalue()


def answers(servers: dict[str, Server], name: str, body: Path) -> float:
    """Largest |p - ours| over the servers' probabilities for one request (RuntimeError
    above 1e-4 or on another top label: a fast wrong answer is no result)."""
    import urllib.request

    probs = {}
    for key, server in servers.items():
        request = urllib.request.Request(
            f"{server.url}/v2/models/{name}/infer", body.read_bytes(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=60) as response:
            probs[key] = np.array(json.load(response)["outputs"][0]["data"], np.float32)
    diff = max(float(np.abs(p - probs["ours"]).max()) for p in probs.values())
    if diff > 1e-4 or len({int(p.argmax()) for p in probs.values()}) > 1:
        raise RuntimeError(f"the servers disagree by {diff:.2g}: {probs}")
    return diff


def group(label, bundle, workers, loads, args, work) -> tuple[list[dict], dict]:
    """Start the four servers on `bundle`, check their answers, run `loads` round-robin:
    [(load, concurrency, {server: path})]; return (rows, facts)."""
    name = json.loads((bundle / "lineage.json").read_text())["cell"]
    jpeg = photo_jpeg() if "photo" in label else None
    files = bodies(bundle, work, jpeg)
    servers = {}
    try:
        for key, cmd in commands(bundle, name, workers, work, args.venvs).items():
            servers[key] = start(f"{label}-{key}", cmd, work)
            wait_ready(servers[key])
        first = files["jpeg" if jpeg else "1 image"][0]
        facts = {"max_abs_diff": answers(servers, name, first), "jpeg_bytes": len(jpeg or b"")}
        runs: dict[tuple, list[dict]] = {}
        for rep in range(args.reps):
            for load, concurrency, paths in loads:
                for key, path in paths.items():
                    path = path.format(name=name)
                    file, content = files["jpeg multipart" if "multipart" in load else load]
                    if rep == 0 and concurrency == loads[0][1]:  # warm-up, not recorded
                        wrk(servers[key].url + path, 8, 1.0, file, content)
                    wait_idle(list(servers.values()))
                    pid, cpu = servers[key].proc.pid, cpu_seconds(servers[key].proc.pid)
                    url = servers[key].url + path
                    result = wrk(url, concurrency, args.duration, file, content)
                    new = row(key, concurrency, result, cpu_seconds(pid) - cpu)
                    runs.setdefault((load, concurrency, key), []).append(new)
                    print(f"  {label} {load} c={concurrency} {key}: {new['rps']:,.0f} req/s")
    finally:
        for server in servers.values():
            stop(server)
    rows = []
    for (load, concurrency, key), found in runs.items():
        rows.append(
            {
                "group": label,
                "workers": workers,
                "load": load,
                "concurrency": concurrency,
                "server": key,
                "rps": statistics.median(r["rps"] for r in found),
                "rps_runs": [r["rps"] for r in found],
                "p99_ms": statistics.median(r["p99_ms"] for r in found),
                "failed": sum(r["failed"] for r in found),
                "cpu_ms": statistics.median(r["server_cpu_ms_per_request"] or 0 for r in found),
            }
        )
    return rows, facts


INFER = "/v2/models/{name}/infer"
ALL = {key: INFER for key in SERVERS}


def bare_rps(args, work: Path) -> float:
    """The bare ASGI constant's median req/s at c=8 (GET): no framework, no model."""
    server = start("bare", [sys.executable, *BARE, "--host", "127.0.0.1"], work)
    try:
        wait_ready_plain(server)
        runs = [
            wrk(server.url + "/", 8, args.duration, None)["requests"] / args.duration
            for _ in range(args.reps)
        ]
    finally:
        stop(server)
    return statistics.median(runs)


def wait_ready_plain(server: Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", server.port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"bare server not listening: {server.log.read_text()[-2000:]}")


def model_call_s(bundle: Path, body: dict, calls: int = 2000) -> float:
    """Median seconds of one model call on the request's tensor, in process."""
    model, tensor = OnnxModel(bundle), body["inputs"][0]
    pixels = np.asarray(tensor["data"], np.uint8).reshape(tensor["shape"])
    for _ in range(50):
        model.tensor(pixels)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        model.tensor(pixels)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _floor_worker(job: tuple[str, bytes, float]) -> int:
    bundle, jpeg, seconds = job
    model, done = OnnxModel(Path(bundle)), 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        model.tensor(model.decode(jpeg)[None])
        done += 1
    return done


def jpeg_floor(bundle: Path, jpeg: bytes, seconds: float) -> float:
    """Images/s of decode (PIL draft + resize) plus the model call, one process per core."""
    cores = len(os.sched_getaffinity(0))
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        done = pool.map(_floor_worker, [(str(bundle), jpeg, seconds)] * cores)
    return sum(done) / seconds


def best_peer(rows, group, load, concurrency, workers=1) -> tuple[dict, dict]:
    """(our row, the best OIP v2 peer's row) of one case: KServe or MLServer (the naive
    server is a baseline in the table, not a peer a user would deploy)."""
    found = {
        r["server"]: r
        for r in rows
        if (r["group"], r["load"], r["concurrency"], r["workers"])
        == (group, load, concurrency, workers)
    }
    peer = max((found[k] for k in ("kserve", "mlserver") if k in found), key=lambda r: r["rps"])
    return found["ours"], peer


def targets(rows: list[dict], floors: dict) -> list[dict]:
    checks = []

    def check(what: str, value: float, limit: float, higher: bool = True) -> None:
        if value is None:
            checks.append({"target": what, "value": None, "limit": limit, "pass": False})
            return
        ok = value >= limit if higher else value <= limit
        checks.append({"target": what, "value": round(value, 3), "limit": limit, "pass": ok})

    ours, peer = best_peer(rows, "digits", "1 image", 8)
    check("1 image c=8: ours / best peer >= 3", ours["rps"] / peer["rps"], 3.0)
    check("1 image c=8: ours / composed ceiling >= 0.5", ours["rps"] / floors["ceiling_rps"], 0.5)
    ours, peer = best_peer(rows, "digits", "32 images", 8)
    check("32 images c=8: ours / best peer >= 1.5", ours["rps"] / peer["rps"], 1.5)
    for label in ("photo64", "photo224"):
        ours, peer = best_peer(rows, label, "jpeg", 8)
        check(f"{label} JPEG c=8: ours / best peer >= 2", ours["rps"] / peer["rps"], 2.0)
        floor = floors[f"{label}_floor_images_s"]
        check(f"{label} JPEG c=8: ours / decode+model floor >= 0.7", ours["rps"] / floor, 0.7)
    for label, load in (("digits", "1 image"), ("photo224", "jpeg")):
        ours, peer = best_peer(rows, label, load, 32)
        check(
            f"{label} {load} c=32: p99 ours / best peer's <= 1",
            ours["p99_ms"] / peer["p99_ms"],
            1.0,
            higher=False,
        )
    check("failed requests, all cases", sum(r["failed"] for r in rows), 0, higher=False)
    return checks


def table(rows: list[dict]) -> str:
    lines = [
        "| group | workers | load | c | ours | kserve | mlserver | naive | ours / best peer "
        "| p99 ms ours / best peer |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    cases = sorted(
        {(r["group"], r["workers"], r["load"], r["concurrency"]) for r in rows},
        key=lambda c: (c[1], c[0], c[2], c[3]),
    )
    for g, w, load, c in cases:
        found = {
            r["server"]: r
            for r in rows
            if (r["group"], r["workers"], r["load"], r["concurrency"]) == (g, w, load, c)
        }
        cells = [f"{found[k]['rps']:,.0f}" if k in found else "-" for k in SERVERS]
        if "kserve" in found:
            ours, peer = best_peer(rows, g, load, c, w)
            ratio = f"{ours['rps'] / peer['rps']:.2f}x"
            p99 = f"{ours['p99_ms']:.1f} / {peer['p99_ms']:.1f}"
        else:
            ratio = p99 = "-"
        lines.append(f"| {g} | {w} | {load} | {c} | {' | '.join(cells)} | {ratio} | {p99} |")
    return "\n".join(lines)


def run(args, work: Path) -> dict:
    photo_work = args.photo_work or work / "photos"
    photos = {}
    for label, model, size in (("photo64", "cnn", 64), ("photo224", "mobilenet", 224)):
        built = photo_work / label / f"models/runs/photos-{model}-quick/bundle"
        if not (built / "model.onnx").is_file():
            (photo_work / label).mkdir(parents=True, exist_ok=True)
            built = build_photo_bundle(photo_work / label, model, size)
        photos[label] = built
    rows, facts = [], {}
    digits_loads = [
        ("1 image", 1, ALL),
        ("1 image", 8, ALL),
        ("1 image", 32, ALL),
        ("32 images", 8, ALL),
    ]
    plan = [
        ("digits", DIGITS, 1, digits_loads),
        (
            "photo64",
            photos["photo64"],
            1,
            [("jpeg", 8, ALL), ("jpeg (multipart)", 8, {"ours": "/predict"})],
        ),
        (
            "photo224",
            photos["photo224"],
            1,
            [("jpeg", 8, ALL), ("jpeg", 32, ALL), ("jpeg (multipart)", 8, {"ours": "/predict"})],
        ),
        ("digits", DIGITS, 2, [("1 image", 8, ALL)]),
        ("photo224", photos["photo224"], 2, [("jpeg", 8, ALL)]),
    ]
    for label, bundle, workers, loads in plan:
        try:
            found, facts[f"{label}-{workers}w"] = group(label, bundle, workers, loads, args, work)
        except (RuntimeError, OSError) as err:  # a server that fails: say so, measure the rest
            facts[f"{label}-{workers}w"] = {"error": repr(err)[:2000]}
            print(f"peers: {label} with {workers} workers failed: {err!r}", file=sys.stderr)
            continue
        rows += found
    from bench.serve import request_body

    bare = bare_rps(args, work)
    model_s = model_call_s(DIGITS, request_body(DIGITS))
    jpeg_bytes = photo_jpeg()
    floors = {
        "bare_rps": round(bare, 1),
        "model_call_ms": round(model_s * 1000, 4),
        "ceiling_rps": round(1 / (1 / bare + model_s), 1),
        **{
            f"{label}_floor_images_s": round(jpeg_floor(b, jpeg_bytes, args.duration), 1)
            for label, b in photos.items()
        },
    }
    return {
        "benchmark": "peers",
        "date": datetime.date.today().isoformat(),
        "duration_s": args.duration,
        "reps": args.reps,
        "statistic": "median of reps, servers interleaved per case",
        "peers": {**PEERS, "onnxruntime": common_version("onnxruntime")},
        "facts": facts,
        "floors": floors,
        "machine": common.machine(),
        "rows": rows,
        "targets": _targets_of(rows, floors),
    }


def _targets_of(rows: list[dict], floors: dict) -> list[dict]:
    try:
        return targets(rows, floors)
    except (KeyError, ValueError) as err:  # a group failed (facts say why): no verdict
        return [{"target": "every case measured", "value": repr(err), "pass": False}]


def main(argv: list[str] | None = None) -> None:
    parser = common.parser("peers", __doc__)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=3, help="runs of each case (median)")
    parser.add_argument(
        "--venvs", type=Path, default=ROOT / ".venv-peers", help="the peers' venvs (made once)"
    )
    parser.add_argument("--photo-work", type=Path, help="keep (and reuse) the photo bundles")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (apt-get install wrk)")
    if not (DIGITS / "model.onnx").is_file():
        parser.error(f"{DIGITS}: no model.onnx (run `make run` first)")
    work = Path(tempfile.mkdtemp(prefix="bench_peers_"))
    try:
        results = run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    given = sys.argv[1:] if argv is None else argv
    results["command"] = "python -m bench.peers " + " ".join(given)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print("\n" + table(results["rows"]) + "\n")
    print(json.dumps(results["floors"]))
    for check in results["targets"]:
        print(f"{'PASS' if check['pass'] else 'FAIL'}  {check['target']}: {check['value']}")
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
