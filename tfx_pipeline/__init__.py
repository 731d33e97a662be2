"""The TFX pipeline: ingest, validate, embed, transform, train, evaluate, push."""
