"""Small shared helpers: atomic file output, progress, hashing."""
