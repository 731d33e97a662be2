"""`models.config` (a text-format `ModelServerConfig`): models, base paths, version policies, version labels.

TF Serving's three version policies are read from `model_version_policy`:
`latest { num_versions: N }` (the default, N = 1), `all {}` and
`specific { versions: ... }`; `version_labels` map labels such as `stable` and
`canary` to versions. `ConfigWatcher` tells the model manager when the file
changed, so an edited config is applied while serving (hot reload).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

LATEST, ALL, SPECIFIC = "latest", "all", "specific"


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model are served: `latest` N, `all`, or the `specific` versions listed."""

    kind: str = LATEST
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def allows(self, version: int) -> bool:
        """Whether `version` may be served at all (`specific` lists them; the others allow any)."""
        return self.kind != SPECIFIC or version in self.versions

    @property
    def limit(self) -> Optional[int]:
        """How many versions are served at most (None: no limit)."""
        return self.num_versions if self.kind == LATEST else None

    def describe(self) -> str:
        """`latest 1`, `all` or `specific [1, 2]`, for logs."""
        if self.kind == LATEST:
            return f"latest {self.num_versions}"
        return ALL if self.kind == ALL else f"specific {sorted(self.versions)}"


@dataclass(frozen=True)
class ModelConfig:
    """One model of `models.config`: name, absolute base path, version policy and version labels."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = field(default_factory=dict)


def _policy(path: str, c: model_server_config_pb2.ModelConfig) -> VersionPolicy:
    if not c.HasField("model_version_policy"):
        return VersionPolicy()
    choice = c.model_version_policy.WhichOneof("policy_choice")
    if choice is None:
        return VersionPolicy()
    if choice == LATEST:
        n = c.model_version_policy.latest.num_versions or 1
        if n < 1:
            raise ValueError(f"{path}: model {c.name!r}: latest.num_versions must be >= 1, got {n}")
        return VersionPolicy(LATEST, num_versions=n)
    if choice == ALL:
        return VersionPolicy(ALL)
    versions = tuple(sorted(set(c.model_version_policy.specific.versions)))
    if not versions:
        raise ValueError(f"{path}: model {c.name!r}: a specific version policy needs at least one version")
    return VersionPolicy(SPECIFIC, versions=versions)


def read_models_config(path: str) -> list[ModelConfig]:
    """Parses a text-format `ModelServerConfig` into one `ModelConfig` per model.

    Relative base paths are resolved against the config file's directory. Raises ValueError with the
    file name on a parse error, a custom model config, a non-TensorFlow platform, a duplicate name,
    an empty specific policy or a label naming a version a specific policy excludes.
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
        policy = _policy(path, c)
        labels = dict(c.version_labels)
        for label, version in labels.items():
            if not policy.allows(version):
                raise ValueError(f"{path}: model {c.name!r}: label {label!r} names version {version}, "
                                 f"which its {policy.describe()} policy does not serve")
        seen.add(c.name)
        base = c.base_path if os.path.isabs(c.base_path) else os.path.join(here, c.base_path)
        result.append(ModelConfig(c.name, os.path.normpath(base), policy, labels))
    return result


class ConfigWatcher:
    """Re-reads `models.config` when its content changes; a file that fails to parse keeps the last good one."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._text: Optional[str] = None

    def changed(self) -> Optional[list[ModelConfig]]:
        """The new configs if the file's content changed since the last call, else None.

        Raises:
          ValueError / OSError: the changed file cannot be read or parsed (the caller keeps the old one;
            the same content is not reported again).
        """
        with open(self.path) as f:
            text = f.read()
        if text == self._text:
            return None
        self._text = text
        return read_models_config(self.path)
