"""Applying a model to whole songs: chunking, cross-fades, batching and the shift trick."""

from stemkit.inference.chunked import WINDOWS, check_settings, cross_fade, separate

__all__ = ["WINDOWS", "check_settings", "cross_fade", "separate"]
