"""The TFX pipeline: ingest, validate, split, embed, transform, train, evaluate, push."""

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any module of this package imports TensorFlow)
