"""Evaluation results as results.json, a markdown table, PNG plots and a console table.

Input is the dict returned by `evaluate_models`. Every file is written
atomically (temporary file, then rename).
"""

from __future__ import annotations

import os
from typing import Any, Optional

from learn_tf.evaluation.metrics import metric_names
from learn_tf.utils.io import atomic_open, atomic_path, write_json

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
RECALL_PNG = "recall_at_k.png"
SEGMENTS_PNG = "segments.png"
PROTOCOLS_TITLE = {"masked": "masked (history items excluded)", "unmasked": "unmasked (official LEARN)"}


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.4f}"


def _protocols(results: dict[str, Any]) -> list[str]:
    """Protocols in the order of the first model's results."""
    models = results["models"]
    return list(next(iter(models.values())).keys()) if models else []


def _label(results: dict[str, Any], protocol: str) -> str:
    first = next(iter(results["models"].values()))[protocol]
    extra = f"; mask: {first['mask_source']}" if first.get("mask_source") else ""
    return f"{first['label']}{extra}"


def segment_metric(results: dict[str, Any]) -> str:
    """The metric of the segment table and chart: NDCG@10, else NDCG at the smallest K.

    Args:
      results: the dict from `evaluate_models`.

    Returns:
      A metric key such as "ndcg@10".
    """
    ks = results["ks"]
    return "ndcg@10" if 10 in ks else f"ndcg@{min(ks)}"


def _segments(results: dict[str, Any], protocol: str) -> dict[str, int]:
    first = next(iter(results["models"].values()))[protocol]
    return {s: v["count"] for s, v in first["segments"].items()}


def format_table(results: dict[str, Any], markdown: bool = False) -> str:
    """One table per protocol (rows = models, columns = metrics) plus a segment table.

    Args:
      results: the dict from `evaluate_models`.
      markdown: pipe tables for results.md instead of aligned console columns.

    Returns:
      The tables as one string.
    """
    names = metric_names(results["ks"])
    seg_metric = segment_metric(results)
    lines: list[str] = []

    def table(header: list[str], rows: list[list[str]]) -> None:
        if markdown:
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
            lines.extend("| " + " | ".join(r) + " |" for r in rows)
        else:
            widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
            for r in [header] + rows:
                lines.append("  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                              for i, (c, w) in enumerate(zip(r, widths))))
        lines.append("")

    title = "## " if markdown else ""
    sub = "### " if markdown else ""
    lines.append(f"{title}Evaluation: {results['n_cases']:,} cases ({', '.join(results['splits']) or '-'}), "
                 f"{results['n_items']:,} items, full-catalogue ranking, ties: {results['ties']}")
    lines.append("")
    for p in _protocols(results):
        lines.append(f"{sub}{_label(results, p)}")
        lines.append("")
        rows = [[m] + [_fmt(r[p]["overall"]["metrics"][n]) for n in names] for m, r in results["models"].items()]
        table(["model"] + names, rows)
        counts = _segments(results, p)
        if counts:
            lines.append(f"{sub}{seg_metric} per segment, {p} (cases per segment in the header)")
            lines.append("")
            header = ["model", f"overall (n={results['n_cases']})"] + [f"{s} (n={c})" for s, c in counts.items()]
            rows = [[m, _fmt(r[p]["overall"]["metrics"][seg_metric])]
                    + [_fmt(r[p]["segments"][s]["metrics"][seg_metric]) for s in counts]
                    for m, r in results["models"].items()]
            table(header, rows)
    return "\n".join(lines).rstrip() + "\n"



def _plot_recall(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = _protocols(results)
    ks = sorted(results["ks"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.5 * len(protocols), 4), squeeze=False)
    for ax, p in zip(axes[0], protocols):
        for m, r in results["models"].items():
            ax.plot(ks, [r[p]["overall"]["metrics"][f"recall@{k}"] for k in ks], marker="o", label=m)
        ax.set_xscale("log")
        ax.set_xticks(ks)
        ax.set_xticklabels([str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_ylabel("Recall@K")
        ax.set_title(PROTOCOLS_TITLE.get(p, p), fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _plot_segments(results: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric = segment_metric(results)
    protocols = _protocols(results)
    models = list(results["models"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(6 * len(protocols), 4), squeeze=False)
    for ax, p in zip(axes[0], protocols):
        counts = _segments(results, p)
        groups = ["overall"] + list(counts)
        x = np.arange(len(groups))
        width = 0.8 / max(1, len(models))
        for i, m in enumerate(models):
            r = results["models"][m][p]
            vals = [r["overall"]["metrics"][metric]] + [r["segments"][s]["metrics"][metric] for s in counts]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, [v or 0.0 for v in vals], width, label=m)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{g}\n(n={results['n_cases'] if g == 'overall' else counts[g]})" for g in groups],
                           fontsize=7)
        ax.set_ylabel(metric.upper())
        ax.set_title(PROTOCOLS_TITLE.get(p, p), fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)



def write_report(results: dict[str, Any], output_dir: str, plots: bool = True) -> dict[str, str]:
    """Writes results.json, results.md and (optionally) the two PNG plots.

    Args:
      results: the dict from `evaluate_models`.
      output_dir: folder to write into (created if needed).
      plots: also write recall_at_k.png (Recall@K curves per model and
        protocol) and segments.png (segment metric per model and protocol).

    Returns:
      {"json": path, "markdown": path, ["recall_plot": path, "segment_plot": path]}.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, RESULTS_JSON), "markdown": os.path.join(output_dir, RESULTS_MD)}
    write_json(paths["json"], results)
    with atomic_open(paths["markdown"]) as f:
        f.write(format_table(results, markdown=True))
    if plots and results["models"]:
        paths["recall_plot"] = os.path.join(output_dir, RECALL_PNG)
        paths["segment_plot"] = os.path.join(output_dir, SEGMENTS_PNG)
        _plot_recall(results, paths["recall_plot"])
        _plot_segments(results, paths["segment_plot"])
    return paths
