"""The served models: version discovery and polling, atomic swaps, status, `models.config`.

Model base: `<base>/<model_name>/<version>/` SavedModel directories, listed by a
text-format `ModelServerConfig` (`models.config`) or, without one, every
subdirectory of the base. Each model serves its highest version that loaded
(latest-version policy). A background thread polls the base: a new version is
loaded (and warmed up, see `serving.servable`) off the request path and swapped
in atomically, so in-flight requests finish on the old version. A version that
fails to load is logged, reported by `GetModelStatus` as END with its error,
and never replaces the version being served. Version directories whose names
are not integers (e.g. an exporter's `.3.tmp-*` directory) are ignored.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Optional

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.servable import Servable, load_servable, warm_up
from serving.tensor_codec import MAX_MESSAGE_CHARS, RequestError, clean_tf_message

_State = get_model_status_pb2.ModelVersionStatus.State
_log = logging.getLogger("learn_tf.serving")


@dataclass
class _VersionStatus:
    state: int
    error_code: int = 0
    error_message: str = ""


@dataclass
class _Model:
    """A served model: its base path, the version being served and the status of every version seen."""

    name: str
    base_path: str
    version_labels: dict[str, int] = field(default_factory=dict)
    current: Optional[Servable] = None
    statuses: dict[int, _VersionStatus] = field(default_factory=dict)
    failed: dict[int, tuple] = field(default_factory=dict)  # version -> fingerprint that failed
    missing_logged: bool = False


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


def read_models_config(path: str) -> list[tuple[str, str, dict[str, int]]]:
    """Parses a text-format `ModelServerConfig` into (name, absolute base path, version labels) triples.

    Relative base paths are resolved against the config file's directory. Raises ValueError with the
    file name on a parse error, a custom model config, a non-TensorFlow platform or a duplicate name.
    """
    config = model_server_config_pb2.ModelServerConfig()
    with open(path) as f:
        text = f.read()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ValueError(f"{path}: not a text-format ModelServerConfig: {e}") from e
    if config.HasField("custom_model_config"):
        raise ValueError(f"{path}: custom_model_config is not supported; use model_config_list")
    here = os.path.dirname(os.path.abspath(path))
    result, seen = [], set()
    for c in config.model_config_list.config:
        if not c.name or not c.base_path:
            raise ValueError(f"{path}: every config needs a name and a base_path (got {c.name!r}, {c.base_path!r})")
        if c.name in seen:
            raise ValueError(f"{path}: model {c.name!r} is configured twice")
        if c.model_platform not in ("", "tensorflow"):
            raise ValueError(f"{path}: model {c.name!r} has model_platform {c.model_platform!r}; "
                             "only \"tensorflow\" is served")
        if c.HasField("model_version_policy") and c.model_version_policy.WhichOneof("policy_choice") not in (
                None, "latest"):
            _log.warning("%s: model %s asks for a %s version policy; this server serves the latest version only",
                         path, c.name, c.model_version_policy.WhichOneof("policy_choice"))
        seen.add(c.name)
        base = c.base_path if os.path.isabs(c.base_path) else os.path.join(here, c.base_path)
        result.append((c.name, os.path.normpath(base), dict(c.version_labels)))
    return result


class ModelManager:
    """The models of a TF Serving model base: which version each serves, and the status of every version.

    `models_config` is a text-format `ModelServerConfig`; without it every subdirectory of
    `model_base` is a model (new subdirectories are picked up by `poll()`). `max_elements` bounds
    each input tensor of the warmup requests replayed before a version is swapped in.

    Raises:
      ValueError: `models_config` is invalid (see `read_models_config`).
      FileNotFoundError: no `models_config` and `model_base` is not a directory.
    """

    def __init__(self, model_base: str, models_config: Optional[str] = None, max_elements: int = 4 << 20) -> None:
        self.model_base = os.path.abspath(model_base)
        self.models_config = models_config
        self.max_elements = max_elements
        self._models: dict[str, _Model] = {}
        self._lock = threading.Lock()  # guards _models and statuses (current is swapped atomically)
        if models_config is not None:
            for name, base, labels in read_models_config(models_config):
                self._models[name] = _Model(name, base, labels)
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

    def start_polling(self, poll_seconds: float) -> None:
        """Polls the model base every `poll_seconds` on a daemon thread until `stop_polling()`."""
        self._poller = threading.Thread(target=self._poll_loop, args=(poll_seconds,), name="serving-poller",
                                        daemon=True)
        self._poller.start()

    def stop_polling(self) -> None:
        """Stops polling: the poller exits after the load in progress, if any (see `join_poller`)."""
        self._stop_event.set()

    def join_poller(self, timeout: float) -> None:
        """Waits up to `timeout` seconds for the poller to exit (a load in progress may still finish)."""
        if self._poller is not None and self._poller is not threading.current_thread():
            self._poller.join(timeout=timeout)

    def _poll_loop(self, poll_seconds: float) -> None:
        while not self._stop_event.wait(poll_seconds):
            try:
                self.poll()
            except Exception:  # the poller must survive anything the filesystem does
                _log.exception("polling the model base failed")

    def poll(self) -> None:
        """One pass over the model base: discovers models, loads and swaps in new versions."""
        with self._poll_lock:  # one loader at a time
            if self.models_config is None:
                self._discover_models()
            with self._lock:
                models = list(self._models.values())
            for model in models:
                if self._stop_event.is_set():
                    return
                self._poll_model(model)
            self._polls += 1

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

    def _set_status(self, model: _Model, version: int, state: int, code: int = 0, message: str = "") -> None:
        with self._lock:
            model.statuses[version] = _VersionStatus(state, code, message[:MAX_MESSAGE_CHARS])

    def _poll_model(self, model: _Model) -> None:
        versions = _version_dirs(model.base_path)
        if not versions and not model.missing_logged:
            _log.warning("no versions of model %s found under %s", model.name, model.base_path)
            model.missing_logged = True
        elif versions:
            model.missing_logged = False
        current = model.current
        for version in versions:  # highest first: stop at the first one that is (or becomes) served
            if current is not None and version == current.version:
                return
            path = os.path.join(model.base_path, str(version))
            fingerprint = _fingerprint(path)
            if model.failed.get(version) == fingerprint:
                continue
            servable = self._load(model, version, path, fingerprint)
            if servable is not None:
                self._swap(model, servable)
                return
        if current is not None and current.version not in versions:
            model.current = None
            self._set_status(model, current.version, _State.END)
            _log.warning("unloaded model %s version %d: its directory is gone and no other version loads",
                         model.name, current.version)

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

    def _swap(self, model: _Model, servable: Servable) -> None:
        old = model.current
        model.current = servable  # atomic: requests that already hold `old` finish on it
        self._set_status(model, servable.version, _State.AVAILABLE)
        if old is None:
            _log.info("model %s version %d is AVAILABLE", model.name, servable.version)
        else:
            self._set_status(model, old.version, _State.END)
            _log.info("model %s: swapped version %d -> %d; unloaded version %d",
                      model.name, old.version, servable.version, old.version)

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

    def _label_version(self, model: _Model, label: str) -> int:
        if label not in model.version_labels:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Unrecognized servable version label: {label} (model {model.name})")
        return model.version_labels[label]

    def resolve(self, spec: Any) -> Servable:
        """The servable a ModelSpec names (latest when no version is given).

        Raises:
          RequestError: INVALID_ARGUMENT without a model name or with an unknown
            version label; NOT_FOUND for an unknown model or a version not served.
        """
        if not spec.name:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "model_spec.name is required")
        model = self._model(spec.name)
        current = model.current
        if spec.HasField("version") or spec.version_label:
            version = spec.version.value if spec.HasField("version") else self._label_version(model, spec.version_label)
            if current is None or current.version != version:
                serving = f"serving version {current.version}" if current else "no version is available"
                raise RequestError(grpc.StatusCode.NOT_FOUND,
                                   f"Servable not found for request: Specific({spec.name}, {version}) ({serving})")
            return current
        if current is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"Servable not found for request: Latest({spec.name}): no version of model "
                               f"{spec.name} is available")
        return current

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
