"""Serving: SavedModel exports with a ScaNN index, TF Serving layout, gRPC server and client."""
