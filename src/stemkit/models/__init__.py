"""Separation models. Build them by name: ``stemkit.models.build("umx", hidden_size=512)``."""

from stemkit.models.registry import available, build, register

__all__ = ["available", "build", "register"]
