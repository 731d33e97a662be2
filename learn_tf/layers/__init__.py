"""Keras (tf_keras) layers of the LEARN towers; each serialisable with `get_config`."""

from learn_tf.layers.adaptor import ContentAdaptor
from learn_tf.layers.content_table import ContentTable
from learn_tf.layers.transformer import CausalTransformerEncoder, TransformerBlock, attention_mask
from learn_tf.layers.projection import ProjectionHead
from learn_tf.layers.saved_tower import SavedModelTower

__all__ = [
    "CausalTransformerEncoder", "ContentAdaptor", "ContentTable", "ProjectionHead", "SavedModelTower",
    "TransformerBlock",
    "attention_mask",
]
