"""Draws the pipeline's DAG (from `create_pipeline`'s real wiring) as a PNG with matplotlib.

    python -m tfx_pipeline.render_dag docs/pipeline_dag.png
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Optional, Sequence

from learn_tf.config import load_config
from tfx_pipeline.pipeline import ROOT, create_pipeline

# Column (stage) and row of each node in the picture.
LAYOUT = {
    "ExampleGen": (0, 2.0), "StatisticsGen": (1.3, 3.0), "SchemaGen": (2.6, 3.0), "ExampleValidator": (3.9, 3.0),
    "DataGate": (5.2, 2.0), "SplitGen": (6.5, 2.0), "ItemEmbeddingGen": (6.5, 3.0), "Transform": (6.5, 1.0),
    "Trainer": (7.8, 2.0), "Evaluator": (9.1, 3.0), "Pusher": (10.4, 2.0),
}
NOTES = {
    "ExampleGen": "ImportExampleGen\nitems + interactions\nTFRecords",
    "StatisticsGen": "TFDV statistics",
    "SchemaGen": "inferred, or curated\n(ImportSchemaGen)",
    "ExampleValidator": "anomalies",
    "DataGate": "stops the run:\nanomalies, unknown\nitems",
    "ItemEmbeddingGen": "Beam + frozen LLM\nincremental cache",
    "SplitGen": "one leave-one-out\nsplit per run",
    "Transform": "item-id vocabulary",
    "Trainer": "run_fn: LEARN towers",
    "Evaluator": "Recall/NDCG/MRR\nsegments, blessing",
    "Pusher": "blessed only: export\n<base>/<name>/<v>/",
}


def dag_edges() -> list[tuple[str, str]]:
    """(upstream, downstream) node ids of the pipeline built for the tiny config."""
    cfg = load_config(os.path.join(ROOT, "configs", "tiny.yaml"))
    with tempfile.TemporaryDirectory() as d:  # docs tool: graphviz scratch files, not artifacts
        p = create_pipeline(cfg, data_dir=d, pipeline_root=d)
    return sorted((u.id, c.id) for c in p.components for u in c.upstream_nodes)


def render_dag(path: str, edges: Optional[Sequence[tuple[str, str]]] = None) -> str:
    """Writes the DAG picture to `path` (PNG); returns the path."""
    # Local: the non-interactive Agg backend must be chosen before pyplot loads, and only when drawing.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    edges = list(edges if edges is not None else dag_edges())
    fig, ax = plt.subplots(figsize=(18, 6))
    w, h = 1.08, 0.62
    colours = {"DataGate": "#f6c9c4", "SplitGen": "#f3ead0", "ItemEmbeddingGen": "#cfe3f7", "Trainer": "#d7efd2",
               "Evaluator": "#fbe5b6", "Pusher": "#e2d6f3"}
    for name, (x, y) in LAYOUT.items():
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02",
                                    fc=colours.get(name, "#eeeeee"), ec="#333333", lw=1.2))
        ax.text(x, y + 0.12, name, ha="center", va="center", fontsize=9.5, weight="bold")
        ax.text(x, y - 0.07, NOTES[name], ha="center", va="center", fontsize=7, linespacing=1.1)
    for a, b in edges:
        (xa, ya), (xb, yb) = LAYOUT[a], LAYOUT[b]
        long = xb - xa > 1.5
        ax.annotate("", xy=(xb - w / 2, yb), xytext=(xa + w / 2, ya),
                    arrowprops=dict(arrowstyle="-|>", color="#8a8a8a" if long else "#444444", lw=1.0,
                                    shrinkA=2, shrinkB=2,
                                    connectionstyle=f"arc3,rad={0.25 if yb <= ya else -0.15}" if long else "arc3"))
    ax.set_xlim(-0.7, 11.1)
    ax.set_ylim(0.4, 3.5)
    ax.axis("off")
    ax.set_title("LEARN-TF TFX pipeline (arrows: artifact and ordering dependencies from create_pipeline)",
                 fontsize=11)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)  # docs tool: the PNG goes to docs/
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover
    print(render_dag(sys.argv[1] if len(sys.argv) > 1 else "docs/pipeline_dag.png"))
