"""Data: ingestion into the canonical tables, leave-one-out splits, synthetic data."""
