"""Accounting for ingestion: rows in, kept and rejected per reason, with examples."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional

import pandas as pd


@dataclass
class TableLog:
    """Counts for one table. Every row that came in is either kept or rejected."""

    table: str
    max_examples: int = 5
    rows_in: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    records: list[dict[str, Any]] = field(default_factory=list)
    notes: Counter = field(default_factory=Counter)

    def reject(self, reason: str, where: str, detail: str, raw: Any = None) -> None:
        """Records one rejected row: `where` names the file and line, `detail` the field."""
        self.rejected[reason] += 1
        rec = {"table": self.table, "reason": reason, "where": where, "detail": detail}
        if raw is not None:
            rec["raw"] = raw if isinstance(raw, (str, dict)) else str(raw)
        self.records.append(rec)
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples:
            ex.append({k: v for k, v in rec.items() if k != "table"})

    def reject_rows(self, reason: str, frame: pd.DataFrame, detail: str, columns: list[str]) -> None:
        """Rejects every row of `frame` (which carries `_file` and `_line`) for `reason`."""
        for rec in frame[["_file", "_line", *columns]].to_dict("records"):
            raw = {c: _plain(rec[c]) for c in columns}
            self.reject(reason, f"{rec['_file']}:{rec['_line']}", detail, raw)

    def note(self, what: str, n: int = 1) -> None:
        """Counts something kept but changed (e.g. a fallback text)."""
        if n:
            self.notes[what] += n

    @property
    def total_rejected(self) -> int:
        """All rejected rows of this table."""
        return sum(self.rejected.values())

    def check_balance(self) -> None:
        """Raises if rows were lost: in must equal kept plus rejected."""
        if self.rows_in != self.kept + self.total_rejected:
            raise AssertionError(
                f"{self.table}: {self.rows_in} rows in but {self.kept} kept + "
                f"{self.total_rejected} rejected"
            )

    def to_dict(self) -> dict[str, Any]:
        """The counts and examples as plain data."""
        return {
            "rows_in": self.rows_in,
            "kept": self.kept,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": self.total_rejected,
            "notes": dict(sorted(self.notes.items())),
            "examples": self.examples,
        }


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v if isinstance(v, (str, int, float, bool)) else str(v)


def format_report(report: dict[str, Any], output_dir: str) -> str:
    """A console table of an ingest report written to `output_dir`."""
    lines = [f"Ingest report: {report['source']} -> {output_dir}"]
    header = f"  {'table':<14}{'rows in':>10}{'kept':>10}{'rejected':>10}  reasons"
    lines.append(header)
    lines.append("  " + "-" * (len(header) - 2))
    for name in ("items", "interactions"):
        t = report["tables"][name]
        reasons = ", ".join(f"{k}={v}" for k, v in t["rejected"].items()) or "-"
        lines.append(f"  {name:<14}{t['rows_in']:>10,}{t['kept']:>10,}{t['rejected_total']:>10,}  {reasons}")
        for k, v in t["notes"].items():
            lines.append(f"  {'':<14}note: {k} = {v:,}")
    s = report["summary"]
    lines.append(
        f"  kept: {s['users']:,} users, {s['items']:,} items, {s['interactions']:,} interactions"
    )
    for name in ("items", "interactions"):
        for reason, exs in report["tables"][name]["examples"].items():
            ex = exs[0]
            lines.append(f"  e.g. {name}/{reason} at {ex['where']}: {ex['detail']}")
    return "\n".join(lines)


def write_rejects(path: str, logs: list[TableLog]) -> int:
    """Writes every rejected row as JSON lines, atomically. Returns the count."""
    from learn_tf.utils.io import atomic_open

    n = 0
    with atomic_open(path) as f:
        for log in logs:
            for rec in log.records:
                f.write(json.dumps(rec, sort_keys=True, ensure_ascii=False, default=str) + "\n")
                n += 1
    return n


def optional_int(v: Any) -> Optional[int]:
    """int(v) or None."""
    return None if v is None else int(v)
