"""SplitGen: the run's one leave-one-out split, computed once from the examples the data gate passed."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from learn_tf.config import SplitConfig
from learn_tf.data.splits import format_split_summary, make_splits, write_splits
from tfx_pipeline import data_io, sections
from tfx_pipeline.components.artifacts import DataReport, Split


class SplitGenSpec(ComponentSpec):
    """SplitGen: examples (after the gate) in, a Split out; the `split` config section as JSON."""

    PARAMETERS = {
        "split_config": ExecutionParameter(type=str),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "data_report": ChannelParameter(type=DataReport),
    }
    OUTPUTS = {
        "split": ChannelParameter(type=Split),
    }


class SplitGenExecutor(base_executor.BaseExecutor):
    """Drops interactions with unknown items (the gate's rule), splits with `make_splits`, writes `write_splits`."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Writes train / validation / test (and per-item statistics) into the Split artifact."""
        examples_uri = artifact_utils.get_single_uri(input_dict["examples"])
        out = artifact_utils.get_single_instance(output_dict["split"])
        items = data_io.read_items(examples_uri)
        interactions, dropped = data_io.known_interactions(data_io.read_interactions(examples_uri), items)
        splits = make_splits(items, interactions, sections.section_from_json(SplitConfig,
                                                                             exec_properties["split_config"]))
        summary = write_splits(splits, out.uri)
        out.set_int_custom_property("train_interactions", int(summary["train_interactions"]))
        out.set_int_custom_property("validation_cases", int(summary["segments"]["validation"]["cases"]))
        out.set_int_custom_property("test_cases", int(summary["segments"]["test"]["cases"]))
        out.set_int_custom_property("cold_items", int(summary["cold_items"]))
        out.set_int_custom_property("unknown_item_interactions", dropped)
        print(format_split_summary(summary))


class SplitGen(base_component.BaseComponent):
    """One split per run: the Trainer, the Evaluator and the Pusher all read this artifact."""

    SPEC_CLASS = SplitGenSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(SplitGenExecutor)

    def __init__(self, examples: types.BaseChannel, data_report: types.BaseChannel, split: SplitConfig) -> None:
        """Args: ExampleGen examples (items + interactions), the DataGate report (ordering), the split section."""
        super().__init__(spec=SplitGenSpec(examples=examples, data_report=data_report,
                                           split_config=sections.section_json(split),
                                           split=types.Channel(type=Split)))
