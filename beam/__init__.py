"""Apache Beam jobs: frozen-LLM item embeddings with keras-hub (KerasNLP)."""
