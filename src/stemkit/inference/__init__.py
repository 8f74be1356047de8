"""Applying a model to whole songs: chunking, cross-fades, batching and the shift trick."""

from stemkit.inference.chunked import check_settings, separate

__all__ = ["check_settings", "separate"]
