"""Config sections as executor parameters: each executor gets only the sections it uses, as sorted JSON.

A component's execution properties are part of TFX's cache key, so a section
that an executor does not read must not reach it: editing `serving.port`
leaves the Trainer's and the Evaluator's properties (and their cache hits) as
they are.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, TypeVar

T = TypeVar("T")


def section_dict(section: Any) -> dict[str, Any]:
    """A config section (frozen dataclass) as JSON-ready plain data."""
    return json.loads(json.dumps(dataclasses.asdict(section)))


def section_json(section: Any) -> str:
    """A config section as key-sorted JSON (stable, so equal sections give equal execution properties)."""
    return json.dumps(section_dict(section), sort_keys=True)


def section_from_dict(cls: type[T], raw: dict[str, Any]) -> T:
    """Rebuilds a section dataclass from `section_dict` output (JSON lists back to tuples where declared)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) and isinstance(fields[k].default, tuple) else v
                  for k, v in raw.items()})


def section_from_json(cls: type[T], text: str) -> T:
    """Rebuilds a section dataclass from `section_json` output."""
    return section_from_dict(cls, json.loads(text))
