"""Item content embeddings: prompt templates, the frozen text encoder, post-processing, storage."""
