"""SequenceGen: the Beam sequence step as a component: one SequenceExample per user, split roles per position."""

from __future__ import annotations

from typing import Any

from tfx import types
from tfx.dsl.components.base import base_beam_component, base_beam_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from beam.sequences import DEFAULT_SHARDS, write_sequences
from learn_tf.config import SplitConfig
from tfx_pipeline import data_io, sections
from tfx_pipeline.components.artifacts import Split, UserSequences


class SequenceGenSpec(ComponentSpec):
    """SequenceGen: examples and the run's Split in, UserSequences out; the `split` section as JSON."""

    PARAMETERS = {
        "split_config": ExecutionParameter(type=str),
        "num_shards": ExecutionParameter(type=int),
    }
    INPUTS = {
        "examples": ChannelParameter(type=standard_artifacts.Examples),
        "split": ChannelParameter(type=Split),
    }
    OUTPUTS = {
        "sequences": ChannelParameter(type=UserSequences),
    }


class SequenceGenExecutor(base_beam_executor.BaseBeamExecutor):
    """Runs `beam.sequences.write_sequences` with the pipeline's Beam args; checks its counts against the Split."""

    def Do(self, input_dict: dict[str, list[Artifact]], output_dict: dict[str, list[Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """Writes the shards and the manifest into the UserSequences artifact.

        Raises:
          ValueError: the roles it marked differ from SplitGen's counts (naming both), which means the two
            steps disagree on the split.
        """
        examples_uri = artifact_utils.get_single_uri(input_dict["examples"])
        split = artifact_utils.get_single_instance(input_dict["split"])
        out = artifact_utils.get_single_instance(output_dict["sequences"])
        item_ids = data_io.read_items(examples_uri)["item_id"].tolist()
        m = write_sequences(data_io.split_files(examples_uri, data_io.INTERACTIONS_SPLIT), item_ids,
                            sections.section_from_json(SplitConfig, exec_properties["split_config"]), out.uri,
                            num_shards=int(exec_properties["num_shards"]),
                            beam_args=list(self._beam_pipeline_args) or ["--direct_running_mode=in_memory"])
        expected = {"train": "train_interactions", "validation": "validation_cases", "test": "test_cases"}
        for role, prop in expected.items():
            want = split.get_int_custom_property(prop)
            if m["roles"][role] != want:
                raise ValueError(f"SequenceGen marked {m['roles'][role]:,} {role} positions but the Split artifact "
                                 f"({split.uri}) has {prop} = {want:,}: the sequence step and SplitGen disagree")
        out.set_int_custom_property("users", int(m["users"]))
        out.set_int_custom_property("positions", int(m["positions"]))
        out.set_int_custom_property("train_positions", int(m["roles"]["train"]))
        out.set_int_custom_property("unknown_item_interactions", int(m["unknown_item_dropped"]))
        print(f"[learn pipeline] sequences: {m['users']:,} users, {m['positions']:,} positions "
              f"({', '.join(f'{k} {v:,}' for k, v in m['roles'].items())}), {m['unknown_item_dropped']:,} "
              f"interactions with unknown items dropped, {len(m['shards'])} shards")


class SequenceGen(base_beam_component.BaseBeamComponent):
    """Per-user SequenceExamples (split roles per position) that the Trainer streams with tf.data."""

    SPEC_CLASS = SequenceGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(SequenceGenExecutor)

    def __init__(self, examples: types.BaseChannel, split: types.BaseChannel, split_config: SplitConfig,
                 num_shards: int = DEFAULT_SHARDS) -> None:
        """Args: ExampleGen examples, the run's Split (SplitGen), the split section, the number of user shards."""
        super().__init__(spec=SequenceGenSpec(examples=examples, split=split,
                                              split_config=sections.section_json(split_config),
                                              num_shards=num_shards, sequences=types.Channel(type=UserSequences)))
