"""Serving: the model repository, per-model worker threads, dynamic batching and statistics."""
