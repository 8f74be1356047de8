"""Model registry: every system is built by name from keyword arguments only.

Example:
    >>> from stemkit import models
    >>> model = models.build("umx", hidden_size=64)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel

_BUILDERS: dict[str, Callable[..., SeparationModel]] = {}

F = TypeVar("F", bound=Callable[..., SeparationModel])


def register(name: str) -> Callable[[F], F]:
    """Register a model class or factory under ``name``.

    Args:
        name: the registry key, lower case (``"umx"``, ``"bsrnn"``, ...).
    """

    def decorator(builder: F) -> F:
        if name in _BUILDERS:
            raise ValueError(f"model name {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder

    return decorator


def build(name: str, **kwargs: Any) -> SeparationModel:
    """Build the model registered as ``name`` with constructor keyword arguments ``kwargs``.

    The arguments are remembered on the model as ``model.init_kwargs`` so that a checkpoint can
    rebuild it exactly.
    """
    _import_all()
    if name not in _BUILDERS:
        raise StemkitError(f"unknown model {name!r}; available: {', '.join(available())}")
    model = _BUILDERS[name](**kwargs)
    model.model_name = name
    model.init_kwargs = dict(kwargs)
    return model


def available() -> list[str]:
    """Names of all registered models, sorted."""
    _import_all()
    return sorted(_BUILDERS)


def _import_all() -> None:
    # Model modules register themselves on import; importing them here keeps `build` usable
    # without the caller knowing which module holds which model.
    from stemkit.models import (  # noqa: F401
        bsrnn,
        demucs,
        hourglass,
        identity,
        oracle,
        tasnet,
        umx,
        xumx,
    )
