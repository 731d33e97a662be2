"""The served models: version policies and labels, polling, atomic swaps, status, hot reload of `models.config`.

Model base: `<base>/<model_name>/<version>/` SavedModel directories, listed by a
text-format `ModelServerConfig` (`models.config`, see `serving.model_config`)
or, without one, every subdirectory of the base. Each model serves the versions
its policy asks for (`latest` N by default N = 1, `all`, `specific`), counting
only versions that load: a broken version is logged, reported by
`GetModelStatus` as END with its error, and never served. A background thread
polls the base (and the config file): a new version is loaded and warmed up
(see `serving.servable`) off the request path and added atomically, then the
versions the policy no longer wants are unloaded; in-flight requests finish on
the version they resolved. A version label moves only once its target version
is AVAILABLE, so a label always names a served version. Version directories
whose names are not integers (e.g. an exporter's `.3.tmp-*`) are ignored.

After a poll that loaded or unloaded a version, the heap is settled
(`settle_heap`): garbage is collected once and the objects left are frozen
out of Python's cyclic collector, so a full collection no longer walks the
loaded models' ~400,000 objects (185 ms at 1M items) in the middle of serving.
"""

from __future__ import annotations

import collections
import gc
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from serving.model_config import ConfigWatcher, ModelConfig, VersionPolicy, read_models_config
from serving.priority import lower_thread_priority
from serving.servable import Servable, load_servable, warm_up
from serving.tensor_codec import MAX_MESSAGE_CHARS, RequestError, clean_tf_message

__all__ = ["ModelManager", "read_models_config"]

_State = get_model_status_pb2.ModelVersionStatus.State
_log = logging.getLogger("learn_tf.serving")


@dataclass
class _VersionStatus:
    state: int
    error_code: int = 0
    error_message: str = ""


@dataclass
class _Model:
    """A served model: its config, the versions being served and the status of every version seen."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    config_labels: dict[str, int] = field(default_factory=dict)  # as configured
    labels: dict[str, int] = field(default_factory=dict)  # in effect: each names a served version
    served: dict[int, Servable] = field(default_factory=dict)  # replaced, never mutated: readers see a snapshot
    statuses: dict[int, _VersionStatus] = field(default_factory=dict)
    failed: dict[int, tuple] = field(default_factory=dict)  # version -> fingerprint that failed
    missing_logged: bool = False
    removed: bool = False


def _version_dirs(base_path: str) -> list[int]:
    """Integer-named version directories under a model's base path, highest first."""
    try:
        names = os.listdir(base_path)
    except OSError:
        return []
    versions = []
    for n in names:
        if n.startswith(".") or not (n.isascii() and n.isdigit()):
            continue
        if not os.path.isdir(os.path.join(base_path, n)):
            continue
        versions.append(int(n))
    return sorted(versions, reverse=True)


def _fingerprint(path: str) -> tuple:
    """Changes when a version directory's graph file is (re)written, so a failed version is retried."""
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        try:
            st = os.stat(os.path.join(path, name))
            return (name, st.st_mtime_ns, st.st_size)
        except OSError:
            continue
    try:
        return ("dir", os.stat(path).st_mtime_ns)
    except OSError:
        return ("missing",)


def settle_heap() -> None:
    """Collects garbage once, then freezes every object left out of the cyclic collector (`gc.freeze`).

    A loaded 1M-item model holds ~400,000 Python objects; once they are frozen, Python's periodic
    full collections skip them, instead of pausing every thread for ~185 ms at random moments under
    load. Unfreezing first lets the collection free the versions unloaded since the last call (their
    reference cycles); objects frozen meanwhile and dropped are still freed by reference counting.
    Process-wide: it also freezes the caller's other objects, as a server process wants.
    """
    start = time.monotonic()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    _log.info("heap settled in %.0f ms: %d objects frozen out of the cyclic collector",
              (time.monotonic() - start) * 1e3, gc.get_freeze_count())


class ModelManager:
    """The models of a TF Serving model base: which versions each serves, labels, and every version's status.

    `models_config` is a text-format `ModelServerConfig`; it is re-read on every poll and applied when
    its content changed (models added or removed, policies, labels); a bad edit is logged and the last
    good config stays. Without it every subdirectory of `model_base` is a model (new subdirectories
    are picked up by `poll()`). `max_elements` bounds each input tensor of the warmup requests replayed
    before a version is served. `history` records every state change as (monotonic time, model,
    version or label, state) for tests and load tests. `freeze_heap`: settle the heap after a poll
    that loaded or unloaded a version (`settle_heap`; process-wide, see there).

    Raises:
      ValueError: `models_config` is invalid (see `read_models_config`).
      FileNotFoundError: no `models_config` and `model_base` is not a directory.
    """

    def __init__(self, model_base: str, models_config: Optional[str] = None, max_elements: int = 4 << 20,
                 freeze_heap: bool = True) -> None:
        self.model_base = os.path.abspath(model_base)
        self.freeze_heap = freeze_heap
        self.models_config = models_config
        self.max_elements = max_elements
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()  # guards _models, statuses and history (served is swapped atomically)
        self.history: collections.deque = collections.deque(maxlen=10_000)
        self._watcher: Optional[ConfigWatcher] = None
        if models_config is not None:
            self._watcher = ConfigWatcher(models_config)
            self._apply_config(self._watcher.changed() or [])
        elif not os.path.isdir(self.model_base):
            raise FileNotFoundError(f"model base {self.model_base} is not a directory")
        self._poller: Optional[threading.Thread] = None
        self._stop_event = threading.Event()
        self._poll_lock = threading.Lock()
        self._polls = 0

    @property
    def polls(self) -> int:
        """Number of completed passes over the model base (tests wait on it instead of sleeping)."""
        return self._polls

    @property
    def model_names(self) -> list[str]:
        """Names of the configured (or discovered) models."""
        with self._lock:
            return sorted(self._models)

    # -- polling -----------------------------------------------------------------------------

    def start_polling(self, poll_seconds: float, thread_nice: int = 0) -> None:
        """Polls the model base every `poll_seconds` on a daemon thread until `stop_polling()`.

        `thread_nice`: the poller (which loads new versions) runs at this nice value (`serving.priority`).
        """
        self._poller = threading.Thread(target=self._poll_loop, args=(poll_seconds, thread_nice),
                                        name="serving-poller", daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        """Stops polling: the poller exits after the load in progress, if any (see `join_poller`)."""
        self._stop_event.set()

    def join_poller(self, timeout: float) -> None:
        """Waits up to `timeout` seconds for the poller to exit (a load in progress may still finish)."""
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(timeout=timeout)

    def _poll_loop(self, poll_seconds: float, thread_nice: int = 0) -> None:
        lower_thread_priority(thread_nice)
        while not self._stop_event.wait(poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must survive anything the filesystem does
                _log.exception("polling the model base failed")

    def poll(self) -> None:
        """One pass: re-reads the config if it changed, discovers models, loads and unloads versions, moves labels."""
        with self._poll_lock:  # one loader at a time
            before = self._served_ids()
            if self._watcher is not None:
                self._reload_config()
            else:
                self._discover_models()
            with self._lock:
                models = list(self._models.values())
            for model in models:
                if self._stop_event.is_set():
                    return
                self._poll_model(model)
            if self.freeze_heap and self._served_ids() != before:
                settle_heap()
            self._polls += 1

    def _served_ids(self) -> set[tuple[str, int, int]]:
        """(model, version, servable id) of every served version: what a poll changed."""
        with self._lock:
            return {(name, v, id(s)) for name, m in self._models.items() for v, s in m.served.items()}

    def _reload_config(self) -> None:
        assert self._watcher is not None
        try:
            configs = self._watcher.changed()
        except (OSError, ValueError) as e:
            _log.error("%s: cannot apply the changed config, keeping the previous one: %s", self._watcher.path, e)
            return
        if configs is not None and self._polls:
            _log.info("%s changed: applying it", self._watcher.path)
        if configs is not None:
            self._apply_config(configs)

    def _apply_config(self, configs: list[ModelConfig]) -> None:
        """Adds, updates and removes models to match `configs` (versions load on the next model pass)."""
        wanted = {c.name: c for c in configs}
        with self._lock:
            for name in [n for n in self._models if n not in wanted or
                         self._models[n].base_path != wanted[n].base_path]:
                model = self._models.pop(name)
                model.removed = True
                for version in model.served:
                    model.statuses[version] = _VersionStatus(_State.END)
                    self._record(model.name, version, "END")
                model.served, model.labels = {}, {}
                _log.info("model %s removed from the config: unloaded", name)
            for c in configs:
                model = self._models.get(c.name)
                if model is None:
                    self._models[c.name] = _Model(c.name, c.base_path, c.policy, dict(c.labels))
                    continue
                if model.policy != c.policy:
                    _log.info("model %s: version policy %s -> %s", c.name, model.policy.describe(), c.policy.describe())
                model.policy, model.config_labels = c.policy, dict(c.labels)

    def _discover_models(self) -> None:
        try:
            names = sorted(os.listdir(self.model_base))
        except OSError as e:
            _log.warning("cannot list model base %s: %s", self.model_base, e)
            return
        for n in names:
            path = os.path.join(self.model_base, n)
            if n.startswith(".") or not os.path.isdir(path):
                continue
            with self._lock:
                if n not in self._models:
                    self._models[n] = _Model(n, path)
                    _log.info("found model %s at %s", n, path)

    def _record(self, model: str, what: Any, state: str) -> None:
        self.history.append((time.monotonic(), model, what, state))

    def _set_status(self, model: _Model, version: int, state: int, code: int = 0, message: str = "") -> None:
        with self._lock:
            model.statuses[version] = _VersionStatus(state, code, message[:MAX_MESSAGE_CHARS])
            self._record(model.name, version, _State.Name(state))

    def _poll_model(self, model: _Model) -> None:
        versions = [v for v in _version_dirs(model.base_path) if model.policy.allows(v)]
        if not versions and not model.missing_logged:
            _log.warning("no versions of model %s found under %s", model.name, model.base_path)
            model.missing_logged = True
        elif versions:
            model.missing_logged = False
        keep: list[int] = []
        limit = model.policy.limit
        for version in versions:  # highest first, only versions that are (or become) served count
            if limit is not None and len(keep) >= limit:
                break
            if version in model.served:
                keep.append(version)
                continue
            path = os.path.join(model.base_path, str(version))
            fingerprint = _fingerprint(path)
            if model.failed.get(version) == fingerprint:
                continue
            servable = self._load(model, version, path, fingerprint)
            if servable is None:
                continue
            if model.removed or self._stop_event.is_set():
                return
            with self._lock:  # the version is served from now on
                model.served = {**model.served, version: servable}
                model.statuses[version] = _VersionStatus(_State.AVAILABLE)
                self._record(model.name, version, "AVAILABLE")
            _log.info("model %s version %d is AVAILABLE", model.name, version)
            keep.append(version)
        self._move_labels(model)  # before unloading: a label always names a served version
        for version in sorted(set(model.served) - set(keep)):
            with self._lock:
                model.served = {v: s for v, s in model.served.items() if v != version}
                for label in [k for k, v in model.labels.items() if v == version]:
                    self._record(model.name, label, "label:none")
                model.labels = {k: v for k, v in model.labels.items() if v != version}
                model.statuses[version] = _VersionStatus(_State.END)
                self._record(model.name, version, "END")
            gone = "" if os.path.isdir(os.path.join(model.base_path, str(version))) else " (its directory is gone)"
            _log.info("model %s: unloaded version %d%s; serving %s", model.name, version, gone,
                      sorted(model.served) or "nothing")

    def _move_labels(self, model: _Model) -> None:
        """Points each configured label at its version once that version is served; drops removed labels."""
        with self._lock:
            labels = {}
            for label, version in model.config_labels.items():
                previous = model.labels.get(label)
                if version in model.served:
                    labels[label] = version
                    if previous != version:
                        _log.info("model %s: label %s -> version %d", model.name, label, version)
                elif previous in model.served:
                    labels[label] = previous  # the move waits until the new version is AVAILABLE
            if labels != model.labels:
                model.labels = labels
                for label, version in labels.items():
                    self._record(model.name, label, f"label:{version}")

    def _load(self, model: _Model, version: int, path: str, fingerprint: tuple) -> Optional[Servable]:
        self._set_status(model, version, _State.LOADING)
        _log.info("loading model %s version %d from %s", model.name, version, path)
        try:
            servable = load_servable(model.name, version, path)
            warmed = warm_up(servable, self.max_elements)
        except Exception as e:
            code = e.error_code if isinstance(e, tf.errors.OpError) else 2  # tensorflow.error.UNKNOWN
            message = f"{type(e).__name__}: {clean_tf_message(str(e))}"
            model.failed[version] = fingerprint
            self._set_status(model, version, _State.END, code, message)
            _log.error("model %s version %d failed to load and will not be served: %s",
                       model.name, version, message)
            return None
        if warmed:
            _log.info("model %s version %d: %d warmup request(s) ok", model.name, version, warmed)
        model.failed.pop(version, None)
        return servable

    # -- lookups for requests ----------------------------------------------------------------

    def _model(self, name: str) -> _Model:
        with self._lock:
            model = self._models.get(name)
            known = sorted(self._models)
        if model is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({name}): no model named \"{name}\" "
                               f"(models: {', '.join(known) or 'none'})")
        return model

    def _label_version(self, model: _Model, label: str, labels: Optional[dict[str, int]] = None) -> int:
        labels = model.labels if labels is None else labels
        if label not in model.config_labels:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {label} (model {model.name}; labels: "
                               f"{', '.join(sorted(model.config_labels)) or 'none'})")
        version = labels.get(label)
        if version is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: label {label} of model {model.name} names version "
                               f"{model.config_labels[label]}, which is not available")
        return version

    def resolve(self, spec: Any) -> Servable:
        """The servable a ModelSpec names: its version, its label's version, or the highest served version.

        Raises:
          RequestError: INVALID_ARGUMENT without a model name or with an unknown label; NOT_FOUND
            for an unknown model or a version not served.
        """
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is required")
        model = self._model(spec.name)
        with self._lock:  # one consistent snapshot: every label in effect names a served version
            served, labels = model.served, model.labels
        if spec.HasField("version") or spec.version_label:
            version = (spec.version.value if spec.HasField("version")
                       else self._label_version(model, spec.version_label, labels))
            servable = served.get(version)
            if servable is None:
                serving = f"serving versions {sorted(served)}" if served else "no version is available"
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({spec.name}, {version}) ({serving})")
            return servable
        if not served:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({spec.name}): no version of model "
                               f"{spec.name} is available")
        return served[max(served)]

    def labels(self, name: str) -> dict[str, int]:
        """The version labels in effect for model `name` (label -> served version)."""
        return dict(self._model(name).labels)

    def status(self, spec: Any) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus for a ModelSpec: every version seen, or the one it names (errors as `resolve`)."""
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is required")
        with self._lock:
            model = self._models.get(spec.name)
            statuses = dict(model.statuses) if model is not None else {}
        if model is None or not statuses:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}")
        if spec.HasField("version") or spec.version_label:
            version = spec.version.value if spec.HasField("version") else self._label_version(model, spec.version_label)
            if version not in statuses:
                raise RequestError(grpc.StatusCode.NOT_FOUND, f"Could not find version {version} of model {spec.name}")
            statuses = {version: statuses[version]}
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in sorted(statuses, reverse=True):
            s = statuses[version]
            entry = response.model_version_status.add(version=version, state=s.state)
            entry.status.error_code = s.error_code
            entry.status.error_message = s.error_message
        return response
