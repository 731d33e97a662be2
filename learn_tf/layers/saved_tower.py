"""An exported tower SavedModel (`learn_user` / `learn_item`) as a frozen Keras layer."""

from __future__ import annotations

from typing import Any, Optional

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="learn_tf")
class SavedModelTower(tf.keras.layers.Layer):
    """Calls one signature of a SavedModel, frozen (no weight of it ever trains).

    For the exports of `serving.export.export_towers`: `learn_user` maps a
    [B, T] string history (right-padded with "") to "user_embedding" [B, d];
    `learn_item` maps [B] string item ids to "item_embedding" [B, d] (and
    "known" [B] bool: unknown ids get the padding row's vector). The
    SavedModel's variables live in the loaded object, not in this layer's
    weights, and gradients are stopped at its output.

    Args:
      path: the SavedModel directory (e.g. `<base>/learn_user/1`).
      signature: the signature to call.
      output_key: which output to return; default: the only output, or the
        only one whose name ends in "_embedding".
    """

    def __init__(self, path: str, signature: str = "serving_default", output_key: Optional[str] = None,
                 **kwargs: Any) -> None:
        kwargs["trainable"] = False
        super().__init__(**kwargs)
        self.path, self.signature = str(path), signature
        self._loaded = tf.saved_model.load(self.path)  # keeps the variables alive
        if signature not in self._loaded.signatures:
            raise ValueError(f"{self.path} has no signature {signature!r}; it has "
                             f"{', '.join(sorted(self._loaded.signatures)) or 'none'}")
        self._fn = self._loaded.signatures[signature]
        inputs = list(self._fn.structured_input_signature[1])
        if len(inputs) != 1:
            raise ValueError(f"{self.path} signature {signature!r} takes {len(inputs)} inputs ({', '.join(inputs)}); "
                             "SavedModelTower supports one")
        self.input_name = inputs[0]
        outputs = sorted(self._fn.structured_outputs)
        if output_key is None:
            embeddings = [k for k in outputs if k.endswith("_embedding")]
            if len(outputs) == 1:
                output_key = outputs[0]
            elif len(embeddings) == 1:
                output_key = embeddings[0]
            else:
                raise ValueError(f"{self.path}: choose output_key from {', '.join(outputs)}")
        if output_key not in outputs:
            raise ValueError(f"{self.path} signature {signature!r} has no output {output_key!r}; "
                             f"it has {', '.join(outputs)}")
        self.output_key = output_key

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """The signature's input tensor -> its `output_key` output (gradient stopped)."""
        return tf.stop_gradient(self._fn(**{self.input_name: inputs})[self.output_key])

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), "path": self.path, "signature": self.signature,
                  "output_key": self.output_key}
        config.pop("trainable", None)
        return config
