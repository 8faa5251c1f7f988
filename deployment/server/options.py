"""The server's command line: its flags, and the Config they make (workers.py hands it to
the worker processes of --workers N as JSON). params.yaml's `serve` section, when the working
directory has one, sets the defaults of the flags it names (store_uploads, retention_days,
...: a flag's name with _ for -); a flag given on the command line wins. A container without
params.yaml gets Config's defaults, the same.
"""

import argparse
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from deployment.server import pointer
from deployment.server.budget import Limits
from deployment.server.bundle import BACKENDS
from deployment.server.cpus import cores


@dataclass
class Config:
    """One server process's settings: the flags, resolved (`config`)."""

    bundle: Path | None  # serve this bundle as is; None: the production pointers' models
    pointers: list[Path] = field(default_factory=list)  # these pointers only; []: deployment's
    deployment: Path | None = None  # serve every deployment/<dataset>/production.json here
    watch_interval: float | None = None  # seconds between pointer polls; None: no reload
    feedback_dir: Path = Path("datasets/raw/feedback")  # a seed-format dataset (feedback.py)
    max_body_bytes: int = Limits.max_body_bytes  # the request budget: budget.py
    max_json_values: int = Limits.max_json_values
    max_images: int = Limits.max_images
    max_pixels: int = Limits.max_pixels
    max_input_mib: float = Limits.max_input_mib
    decode_slots: int = os.cpu_count() or 1  # images decoding at once (budget.Budget)
    model_threads: int = 1  # model calls at once in this process (batcher.py)
    intra_op: int | None = None
    inter_op: int | None = None
    backend: str = "auto"  # load_bundle's: onnx when the bundle has model.onnx, else tf
    drift_window: int = 500  # live predictions compared with bundle/reference.json
    drain_seconds: float = 2.0  # SIGTERM: readiness is false at least this long before exit
    shutdown_timeout: float = 30.0  # SIGTERM: the longest wait for in-flight requests
    workers: int = 1  # server processes on the port (workers.py), each with its own State
    forwarded_allow_ips: str | None = None  # proxies whose X-Forwarded-For is believed
    store_uploads: bool = False  # store every upload, not only those given feedback
    retention_days: float = 30.0  # unexported feedback and stored uploads go after this; 0: never
    pending_minutes: float = 15.0  # how long a prediction (and its upload) waits for feedback
    host: str = "127.0.0.1"  # served on; with no review_token /review needs a loopback host
    review_agree: int = 3  # distinct clients whose same label accepts a record; < 2: reviewer only
    review_flag_score: float = 0.95  # flag a label contradicting a prediction scored this or more
    review_token: str | None = None  # /review's bearer token (also env SERVE_REVIEW_TOKEN)
    ood_threshold: float = 0.0  # refuse (422) images whose OOD score is over this; 0: never

    def limits(self) -> Limits:
        """The request budget these settings give."""
        return Limits(**{f.name: getattr(self, f.name) for f in fields(Limits)})


NO_MODEL = (
    "serve: no production model yet ({pointer} does not exist). Make one with `dvc repro` "
    "(it trains, gates and promotes a model), or serve a bundle with --bundle PATH "
    "(for example models/runs/digits-cnn-base/bundle after `dvc repro`).{then}"
)
WAITING = " Serving meanwhile: /v2/health/live is 200, readiness 503 until a pointer appears."


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"want an integer >= 1, got {text!r}")
    return int(text)


# flag -> argparse keywords; "(default: %(default)s)" is added where there is a default
FLAGS = {
    "--host": dict(default="127.0.0.1", help="address to listen on"),
    "--port": dict(type=int, default=8080, help="port to listen on"),
    "--workers": dict(
        type=_positive,
        default=cores(),
        help="server processes sharing the port, each with its own model and pointer "
        "watcher (deployment/server/workers.py); 1: one process; the default is the cores "
        "this process may use",
    ),
    "--bundle": dict(type=Path, help="serve this bundle (no pointer, no reload)"),
    "--deployment": dict(
        type=Path,
        default=pointer.DEPLOYMENT,
        help="serve every dataset's production model: each <dir>/<dataset>/production.json, "
        "by the dataset's name; one that appears later is served too",
    ),
    "--pointer": dict(
        type=Path,
        action="append",
        help="serve only this production pointer (repeat for several) instead of every "
        "one under --deployment",
    ),
    "--watch-pointer": dict(
        action=argparse.BooleanOptionalAction,
        default=True,
        help="reload when the pointer changes (serving the pointer only)",
    ),
    "--watch-interval": dict(type=float, default=2.0, help="seconds between pointer checks"),
    "--feedback-dir": dict(
        type=Path, default=Config.feedback_dir, help="the feedback database and images"
    ),
    "--max-body-bytes": dict(
        type=_positive,
        default=Config.max_body_bytes,
        help="larger request bodies get 413 before they are read",
    ),
    "--max-json-values": dict(
        type=_positive,
        default=Config.max_json_values,
        help="commas and brackets a JSON body may hold, counted before it is parsed (parsing "
        "holds the GIL); more: 413",
    ),
    "--max-images": dict(
        type=_positive,
        default=Config.max_images,
        help="images a request may hold; more: 413 (the model call's memory grows with them)",
    ),
    "--max-input-mib": dict(
        type=float,
        default=Config.max_input_mib,
        help="MiB of float32 model input a request may make (images x the larger of the "
        "model's input size and the size sent x channels x 4); more: 413",
    ),
    "--max-pixels": dict(
        type=_positive,
        default=Config.max_pixels,
        help="pixels a request's images may hold in all as sent, read from their headers "
        "before decoding; more: 413",
    ),
    "--decode-slots": dict(
        type=_positive,
        default=Config.decode_slots,
        help="images decoding at once, across requests: with --max-pixels, what bounds "
        "decoding memory (the cores)",
    ),
    "--backend": dict(
        choices=BACKENDS,
        default=Config.backend,
        help="onnx (onnxruntime, no TensorFlow), tf, or auto: onnx when the bundle has model.onnx",
    ),
    "--intra-op": dict(
        type=int,
        help="threads within one model op (env SERVE_INTRA_OP; default: 1 on onnx, the "
        "cores on tf)",
    ),
    "--inter-op": dict(
        type=int,
        help="threads across model ops (env SERVE_INTER_OP; default: 1 on onnx, 2 on tf)",
    ),
    "--drift-window": dict(
        type=_positive,
        default=Config.drift_window,
        help="predictions compared with the bundle's reference.json",
    ),
    "--model-threads": dict(
        type=_positive,
        help="model calls running at once in each server process; each batches the "
        "requests waiting for it (deployment/server/batcher.py); default: the cores over "
        "--workers",
    ),
    "--forwarded-allow-ips": dict(
        help="the proxies (comma-separated addresses, or *) whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed; unset: none, a client is the address it connects "
        "from, whatever headers it sends",
    ),
    "--drain-seconds": dict(
        type=float,
        default=Config.drain_seconds,
        help="on SIGTERM, readiness is 503 at least this long before exit",
    ),
    "--shutdown-timeout": dict(
        type=float,
        default=Config.shutdown_timeout,
        help="on SIGTERM, the longest wait for requests in flight",
    ),
    "--store-uploads": dict(
        action=argparse.BooleanOptionalAction,
        default=Config.store_uploads,
        help="store every upload (without metadata); off: only those given feedback",
    ),
    "--retention-days": dict(
        type=float,
        default=Config.retention_days,
        help="remove stored uploads and feedback never exported to a dataset after this "
        "many days, at start and hourly (deployment/server/retention.py); 0: keep",
    ),
    "--pending-minutes": dict(
        type=float,
        default=Config.pending_minutes,
        help="how long a prediction and its upload wait for feedback (then 404)",
    ),
    "--review-agree": dict(
        type=int,
        default=Config.review_agree,
        help="this many distinct clients sending the same label for the same image accept "
        "it for training without a reviewer (deployment/server/review_store.py); < 2: off",
    ),
    "--review-flag-score": dict(
        type=float,
        default=Config.review_flag_score,
        help="flag feedback contradicting a prediction scored at least this: reviewed first, "
        "never accepted by agreement; over 1: flag nothing",
    ),
    "--review-token": dict(
        help="the token GET/POST /review needs (Authorization: Bearer, or ?token=); env "
        "SERVE_REVIEW_TOKEN; unset: /review answers only loopback clients of a loopback --host",
    ),
    "--ood-threshold": dict(
        type=float,
        default=Config.ood_threshold,
        help="refuse (422) a request with an image whose out-of-distribution score (0..1, "
        "deployment/server/ood.py) is over this; 0: never refuse, only report the score",
    ),
    "--require-model": dict(
        action="store_true",
        help="exit (status 2) when there is no production model yet, not wait for one",
    ),
}
PARAMS = Path("params.yaml")  # its `serve` section: defaults of the flags
DERIVED = ("bundle", "pointers", "deployment", "watch_interval", "model_threads")  # by `config`


def summary(doc: str) -> str | None:
    """A docstring's first paragraph, whole (the server imports no repo cli helpers)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split()) or None


def parse(argv: list[str] | None = None, doc: str = "") -> argparse.Namespace:
    """The flags; exits 2 on a bad bundle, or with no model and nothing to wait for."""
    parser = argparse.ArgumentParser(prog="reprovision serve", description=summary(doc))
    for flag, options in FLAGS.items():
        if options.get("default") is not None and options.get("action") != "store_true":
            options = {**options, "help": options["help"] + " (default: %(default)s)"}
        parser.add_argument(flag, **options)
    serve_params(parser)
    args = parser.parse_args(argv)
    found = args.pointer or pointer.every(args.deployment)
    if args.bundle is None and not any(p.exists() for p in found):
        waiting = args.watch_pointer and not args.require_model
        then = WAITING if waiting else ""
        where = ", ".join(map(str, args.pointer or [args.deployment / pointer.PATTERN]))
        print(NO_MODEL.format(pointer=where, then=then), file=sys.stderr)
        if not waiting:
            sys.exit(2)
        return args
    bundles = (
        [args.bundle] if args.bundle else [pointer.read(p).bundle for p in found if p.exists()]
    )
    for bundle in bundles:
        if not (bundle / "model.keras").is_file():
            parser.error(f"{bundle} is not a bundle (no model.keras)")
    return args


def serve_params(
    parser: argparse.ArgumentParser, path: Path = PARAMS, keys: tuple[str, ...] | None = None
) -> dict:
    """Make params.yaml's `serve` section (none without the file), or its `keys`, the
    defaults of `parser`'s flags of the same names, and return it; a key no flag has, or a
    value of the wrong type, is a usage error."""
    try:
        section = (yaml.safe_load(path.read_text()) or {}).get("serve") or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError, AttributeError) as err:
        parser.error(f"{path}: {err}")
    if not isinstance(section, dict):
        parser.error(f"{path}: serve must be a mapping of flag names to values")
    section = {k: v for k, v in section.items() if keys is None or k in keys}
    defaults = {a.dest: a.default for a in parser._actions}
    for key, value in section.items():
        if key not in defaults:
            parser.error(f"{path}: serve.{key} is not a flag of {parser.prog}")
        default = defaults[key]
        want = str if isinstance(default, Path) else type(default)
        fits = isinstance(value, bool) if want is bool else not isinstance(value, bool)
        if default is not None and not (fits and isinstance(value, want | int)):
            parser.error(f"{path}: serve.{key}: want a {want.__name__}, got {value!r}")
        if isinstance(default, Path):
            section[key] = Path(value)
    parser.set_defaults(**section)
    return section


def config(args: argparse.Namespace) -> Config:
    """The server's Config for parsed flags: a --bundle is served as is, with no reload."""
    threads = args.model_threads or max(1, cores() // args.workers)
    return Config(
        bundle=args.bundle,
        pointers=[] if args.bundle else list(args.pointer or []),
        deployment=None if args.bundle or args.pointer else args.deployment,
        watch_interval=args.watch_interval if args.watch_pointer and not args.bundle else None,
        model_threads=threads,
        **{f.name: getattr(args, f.name) for f in fields(Config) if f.name not in DERIVED},
    )
