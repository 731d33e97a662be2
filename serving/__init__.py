"""Serving: SavedModel exports with a ScaNN index, TF Serving layout, gRPC + REST server (batching, version policies) and clients."""
