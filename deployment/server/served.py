"""The models the server serves: every dataset's production model, by name, each hot-reloaded
on its own.

Serving the pointers (the default), each dataset's deployment/<dataset>/production.json
(pointer.every) names a model, served under the dataset's name (`/v2/models/digits`) and,
as an alias, its cell's name (`/v2/models/digits-vgg-base`, the name Triton and KServe use
for the same bundle). Each pointer has its own watcher: a change loads, checks and swaps in
that model only (reload.py), and a pointer that appears later (a new dataset's first
promotion) is found within --watch-interval. With --bundle the one bundle is served under
its cell's name (and its dataset's).

`Served` is the set of models at one moment, never changed in place: each swap makes a new
one, so a request keeps the set it arrived with (door.py pins it) and a hot reload never
changes the model under it.
"""

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from deployment.server import pointer as pointers
from deployment.server.bundle import Bundle, load_bundle
from deployment.server.errors import RETRY_AFTER, ApiError
from deployment.server.reload import (
    CandidateError,
    PointerWatcher,
    load_candidate,
    read_pointer,
    self_check,
)

READY_DIR = "SERVE_READY_DIR"  # --workers N > 1: a file per worker with its models (workers.py)
NOT_LOADED = "the model is not loaded yet"


@dataclass(frozen=True)
class Served:
    """The models served at one moment: name -> bundle, and every name a request may use."""

    models: dict[str, Bundle] = field(default_factory=dict)  # served name -> bundle
    names: dict[str, str] = field(default_factory=dict)  # served, cell and dataset names

    @property
    def only(self) -> Bundle | None:
        """The one model, when exactly one is served."""
        return next(iter(self.models.values())) if len(self.models) == 1 else None

    def find(self, name: str, version: str | None = None) -> Bundle:
        """The model a request names (and its version); 404 otherwise, 503 before any load."""
        if not self.models:
            raise ApiError(503, NOT_LOADED, {"Retry-After": RETRY_AFTER})
        bundle = self.models.get(self.names.get(name, ""))
        if bundle is None or version not in (None, bundle.version):
            wanted = name if version is None else f"{name} version {version}"
            raise ApiError(404, f"unknown model {wanted!r}; serving {sorted(self.models)}")
        return bundle

    def choose(self, name: str | None) -> Bundle:
        """For a route without the model in its path (?model=NAME): the named one, or the
        only one; 400 when several are served and none is named."""
        if name is not None:
            return self.find(name)
        if (bundle := self.only) is not None:
            return bundle
        if not self.models:
            raise ApiError(503, NOT_LOADED, {"Retry-After": RETRY_AFTER})
        raise ApiError(400, f"name a model with ?model=NAME, one of {sorted(self.models)}")

    def with_model(self, key: str, bundle: Bundle) -> "Served":
        """This set with `bundle` served as `key` (replacing what `key` served)."""
        models = {**self.models, key: bundle}
        names = {name: name for name in models}
        for served, each in models.items():  # aliases, unless they are another's name
            for alias in (each.name, each.dataset):
                if alias and alias not in models and names.setdefault(alias, served) != served:
                    print(f"serve: {alias!r} names two models; use {served!r}", file=sys.stderr)
        return Served(models, names)


class Models:
    """Loads the served models, keeps `served` current and hot-reloads each on its own.
    Around each swap, `prepare(key, bundle)` runs before it (returns a note for the log) and
    `swapped(key, old, bundle, seconds, checked, note)` after it."""

    def __init__(self, config, prepare, swapped) -> None:
        self.config, self.prepare, self.swapped = config, prepare, swapped
        self.served = Served()
        self.expected: set[str] = set()  # the served names a full first load holds
        self.watchers: dict[Path, PointerWatcher] = {}
        self._lock = threading.Lock()  # one load at a time
        self._stop = threading.Event()
        self._marked_ready = False

    @property
    def ready(self) -> bool:
        """Every model known at start is loaded (and with --workers N, in every worker)."""
        if not self.served.models or not self.expected <= set(self.served.models):
            return False
        folder = os.environ.get(READY_DIR)
        return not folder or len(os.listdir(folder)) >= self.config.workers

    def start(self) -> None:
        """The first load: the bundle, or every pointer there is now; then the watchers.
        Raises what the first load raises (the server stops)."""
        config = self.config
        if config.bundle is not None:
            started = time.perf_counter()
            bundle = load_bundle(
                config.bundle, config.intra_op, config.inter_op, backend=config.backend
            )
            self.expected = {bundle.name}
            self._swap(bundle.name, bundle, self_check(bundle, None), started)
            return
        found = self._pointers()
        self.expected = {self._key(p) for p in found}
        for path in found:
            self._watch(path)
            self._load(path)
        if not found:
            print(f"serve: waiting for {self._where()}", file=sys.stderr, flush=True)
        if config.watch_interval:
            threading.Thread(target=self._discover, name="find-pointers", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        for watcher in list(self.watchers.values()):
            watcher.stop()

    def reload(self, path: Path) -> None:
        """A pointer changed: load and check its bundle, then swap it in. A bad candidate is
        reported (raised to the caller: counted as a load failure) and the old one serves."""
        self._load(path)

    def _pointers(self) -> list[Path]:
        config = self.config
        if config.pointers:
            return [p for p in config.pointers if p.exists()]
        return pointers.every(config.deployment) if config.deployment else []

    def _where(self) -> str:
        config = self.config
        if config.pointers:
            return ", ".join(map(str, config.pointers))
        return f"{config.deployment}/{pointers.PATTERN}"

    @staticmethod
    def _key(path: Path) -> str:
        """A pointer's served name: its dataset's (deployment/<dataset>/production.json)."""
        return path.parent.name

    def _watch(self, path: Path) -> None:
        interval = self.config.watch_interval
        if interval and path not in self.watchers:
            watcher = PointerWatcher(path, interval, lambda p=path: self.on_change(p))
            self.watchers[path] = watcher.start()

    def on_change(self, path: Path) -> None:  # replaced by State with its error accounting
        self.reload(path)

    def _discover(self) -> None:
        """A new dataset's first pointer appears: serve it too."""
        while not self._stop.wait(self.config.watch_interval):
            for path in self._pointers():
                if path not in self.watchers:
                    print(f"serve: found {path}", file=sys.stderr, flush=True)
                    self._watch(path)
                    self.on_change(path)

    def _load(self, path: Path) -> None:
        with self._lock:
            started = time.perf_counter()
            key, found = self._key(path), read_pointer(path)
            current = self.served.models.get(key)
            if current and found.sha256 and found.sha256[:12] == current.version:
                print(f"serve: {path} changed, same model {current.version}", file=sys.stderr)
                return  # only the pointer's metrics or paths changed
            config = self.config
            bundle, checked = load_candidate(
                found, config.intra_op, config.inter_op, backend=config.backend
            )
            self._swap(key, bundle, checked, started)

    def _swap(self, key: str, bundle: Bundle, checked: str, started: float) -> None:
        bundle.served_as = key
        old, note = self.served.models.get(key), self.prepare(key, bundle)
        self.served = self.served.with_model(key, bundle)  # one assignment: old or new
        if not self._marked_ready and self.expected <= set(self.served.models):
            self._marked_ready = True
            if folder := os.environ.get(READY_DIR):
                Path(folder, str(os.getpid())).touch()  # this worker is ready (workers.py)
        self.swapped(key, old, bundle, time.perf_counter() - started, checked, note)


__all__ = ["CandidateError", "Models", "Served", "READY_DIR"]
