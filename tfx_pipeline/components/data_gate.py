"""DataGate: stops the run (before embedding and training) on schema anomalies or too many unknown items."""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd
from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from learn_tf.utils import io
from tfx_pipeline import data_io
from tfx_pipeline.components.artifacts import DataReport


class DataValidationError(RuntimeError):
    """The input data failed validation; the message is the readable report."""


class DataGateSpec(ComponentSpec):
    """DataGate: anomalies + examples in, a report out."""

    PARAMETERS = {
        "max_unknown_item_fraction": ExecutionParameter(type=float),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "anomalies": ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }
    OUTPUTS = {
        "report": ChannelParameter(type=DataReport),
    }


def anomaly_lines(anomalies_artifact: Artifact) -> list[str]:
    """One readable line per feature / dataset anomaly in an ExampleAnomalies artifact."""
    lines = []
    splits = json.loads(anomalies_artifact.split_names or "[]")
    for split in splits:
        path = os.path.join(anomalies_artifact.uri, f"Split-{split}", "SchemaDiff.pb")
        if not io.exists(path):
            continue
        a = anomalies_pb2.Anomalies()
        a.ParseFromString(io.read_bytes(path))
        for feature, info in sorted(a.anomaly_info.items()):
            lines.append(f"  [{split}] feature '{feature}': {info.short_description} ({info.description})")
        if a.HasField("dataset_anomaly_info"):
            info = a.dataset_anomaly_info
            lines.append(f"  [{split}] dataset: {info.short_description} ({info.description})")
    return lines


def gate_report(items: pd.DataFrame, interactions: pd.DataFrame, anomalies: list[str], limit: float
                ) -> dict[str, Any]:
    """The gate's rules: anomalies, duplicate or missing items, empty input, unknown items above `limit`.

    Returns:
      {"items", "interactions", "unknown_item_interactions", "unknown_item_fraction",
      "max_unknown_item_fraction", "anomalies", "problems", "ok"}.
    """
    problems = []
    if anomalies:
        problems.append(f"schema anomalies ({len(anomalies)}):")
        problems.extend(anomalies)
    dup = items["item_id"][items["item_id"].duplicated()]
    if len(dup):
        problems.append(f"{len(dup):,} duplicate item ids in the catalogue, e.g. {dup.iloc[0]!r}")
    if len(items) == 0 or len(interactions) == 0:
        problems.append(f"empty input: {len(items):,} items, {len(interactions):,} interactions")
    unknown = data_io.unknown_items(interactions, items)
    n_unknown = int(unknown.sum())
    fraction = n_unknown / len(interactions) if len(interactions) else 0.0
    if fraction > limit:
        examples = interactions.loc[unknown, "item_id"].value_counts().head(5)
        shown = ", ".join(f"{k!r} ({v:,} rows)" for k, v in examples.items())
        problems.append(
            f"{n_unknown:,} of {len(interactions):,} interactions ({fraction:.2%}) reference items that are "
            f"not in the catalogue of {len(items):,} items (limit pipeline.max_unknown_item_fraction "
            f"{limit:.2%}); most frequent unknown ids: {shown}")
    return {"items": len(items), "interactions": len(interactions), "unknown_item_interactions": n_unknown,
            "unknown_item_fraction": fraction, "max_unknown_item_fraction": limit,
            "anomalies": anomalies, "problems": problems, "ok": not problems}


def format_report(report: dict[str, Any]) -> str:
    """The report as text: a verdict line, then one line per problem."""
    problems = report["problems"]
    text = "Data validation " + ("passed" if not problems else "FAILED") + (
        f": {report['items']:,} items, {report['interactions']:,} interactions, "
        f"{report['unknown_item_interactions']:,} with unknown items\n")
    return text + "".join(f"  - {p}\n" if not p.startswith("  ") else f"  {p}\n" for p in problems)


class DataGateExecutor(base_executor.BaseExecutor):
    """Stops the run with a readable report on schema anomalies or too many unknown items."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Checks the data; raises DataValidationError (so nothing downstream runs) when it fails."""
        examples_uri = artifact_utils.get_single_uri(input_dict["examples"])
        anomalies = artifact_utils.get_single_instance(input_dict["anomalies"])
        report_artifact = artifact_utils.get_single_instance(output_dict["report"])
        report = gate_report(data_io.read_items(examples_uri), data_io.read_interactions(examples_uri),
                             anomaly_lines(anomalies), float(exec_properties["max_unknown_item_fraction"]))
        data_io.write_text(os.path.join(report_artifact.uri, "report.json"), json.dumps(report, indent=2))
        text = format_report(report)
        data_io.write_text(os.path.join(report_artifact.uri, "report.txt"), text)
        report_artifact.set_int_custom_property("anomalies", len(report["anomalies"]))
        report_artifact.set_float_custom_property("unknown_item_fraction", report["unknown_item_fraction"])
        if report["problems"]:
            raise DataValidationError(text + "The run stopped before embedding and training; fix the input data "
                                      "or the curated schema (pipeline.schema_path). Report: "
                                      + os.path.join(report_artifact.uri, "report.txt"))


class DataGate(base_component.BaseComponent):
    """Fails the run (before embedding and training) on schema anomalies or unknown items."""

    SPEC_CLASS = DataGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(DataGateExecutor)

    def __init__(self, examples: types.BaseChannel, anomalies: types.BaseChannel,
                 max_unknown_item_fraction: float) -> None:
        """Args: ExampleGen examples (items + interactions splits), ExampleValidator anomalies, the limit."""
        super().__init__(spec=DataGateSpec(examples=examples, anomalies=anomalies,
                                           max_unknown_item_fraction=float(max_unknown_item_fraction),
                                           report=types.Channel(type=DataReport)))
