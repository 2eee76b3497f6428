"""Batch progress: chunked work with per-item errors kept in state and a progress query
(ZoopFlow's batchDataProcessing, on garrison)."""
