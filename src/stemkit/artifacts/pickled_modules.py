"""Reading a pickled whole model (``torch.save(model)``) without running anything from the file.

The Demucs v1 release published its models as pickles of demucs's own ``nn.Module`` classes.
``torch.load(weights_only=True)`` refuses them, and an ordinary ``torch.load`` would import
demucs and run whatever the pickle asks for. :func:`read_pickled_module` instead gives
``torch.load`` a pickle module whose unpickler resolves only:

* tensor and storage rebuilding (``torch._utils._rebuild_tensor_v2``, ``_rebuild_parameter``,
  the typed storages), ``collections.OrderedDict``, ``set``, ``frozenset``, ``torch.Size``,
  ``_codecs.encode`` (bytes in protocol 2), numpy scalars (``numpy.dtype`` and
  ``multiarray.scalar``), and what OmegaConf containers record of their types (``typing.Any``,
  ``dict``, ``list``, ``collections.defaultdict``: building a container runs nothing);
* classes of ``torch.nn.modules.*`` and of the allowed model packages (``demucs.*`` by
  default), each replaced by an inert :class:`PickledModule` subclass that records the class
  path and the attribute dictionary the pickle restores, and has no behaviour.

Anything else (``os.system``, ``builtins.eval``, any other global) stops the load with
:class:`~stemkit.errors.CheckpointError` before it is resolved, so nothing is imported or called.
No module of the file is imported: the stubs are made here, from the names alone.
:func:`module_state_dict` walks the stub tree to the ``state_dict`` the model had.

Example:
    >>> root = read_pickled_module("demucs.th")
    >>> root.class_path, root.attributes["channels"]
    ('demucs.model.Demucs', 100)
"""

from __future__ import annotations

import _compat_pickle
import codecs
import collections
import os
import pickle
import typing
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stemkit.errors import CheckpointError

__all__ = [
    "PickledModule",
    "Refused",
    "module_state_dict",
    "named_children",
    "read_pickled_module",
    "restricted_load",
]

try:  # numpy 2 moved numpy.core to numpy._core; pickles name either
    from numpy._core import multiarray as np_multiarray
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core import multiarray as np_multiarray  # type: ignore[no-redef]

#: Module prefixes whose classes become stubs besides ``torch.nn.modules.``.
DEFAULT_PACKAGES = ("demucs",)

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch", "Size"): torch.Size,
    # protocol 2 writes bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"): codecs.encode,
    # numpy scalars (asteroid's model_args hold max_bin as numpy.int64): a dtype and its bytes
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "scalar"): np_multiarray.scalar,
    ("numpy._core.multiarray", "scalar"): np_multiarray.scalar,
    # OmegaConf records the declared type of its containers' keys and values (a Lightning
    # checkpoint's hyper-parameters): an inert marker
    ("typing", "Any"): typing.Any,
    # ... and of their objects (``object_type``): building a container runs nothing
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("collections", "defaultdict"): collections.defaultdict,
}


class Refused(pickle.UnpicklingError):
    """The pickle asks for something outside the allowed set (raised before resolving it)."""


class PickledModule:
    """An inert stand-in for one pickled ``nn.Module``: its class path and its attributes.

    Subclasses are made per class path by the unpickler; ``pickle`` creates instances with
    ``cls.__new__`` and hands the saved ``__dict__`` to :meth:`__setstate__`, which only
    stores it. Calling the class (a pickle that asks for ``Demucs(...)`` rather than
    restoring one) is refused.

    Attributes:
        class_path: ``"module.Class"`` as the pickle names it, e.g. ``"demucs.model.Demucs"``.
        attributes: the instance dictionary as saved (``_parameters``, ``_modules``, and the
            model's own attributes such as ``channels``).
    """

    class_path = ""
    attributes: dict[str, Any]
    # read by torch when the saved source of a class differs from the source it finds
    dump_patches = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise Refused(f"the pickle calls {self.class_path}(...) instead of restoring it")

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and state[1] is None:
            state = state[0]  # (dict, slots) with no slots
        if not isinstance(state, dict):
            raise Refused(
                f"the state of {self.class_path} is a {type(state).__name__}, not a dictionary"
            )
        self.attributes = state

    @property
    def name(self) -> str:
        """The class name alone, e.g. ``"Conv1d"``."""
        return self.class_path.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<pickled {self.class_path}>"


def _stub(module: str, name: str) -> type[PickledModule]:
    return type(name, (PickledModule,), {"class_path": f"{module}.{name}", "__module__": __name__})


def _restricted_pickle_module(packages: tuple[str, ...]) -> ModuleType:
    """A stand-in for the ``pickle`` module whose ``Unpickler`` and ``load`` are restricted."""
    stubs: dict[tuple[str, str], type[PickledModule]] = {}
    prefixes = ("torch.nn.modules.", *(f"{package}." for package in packages))

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # protocol 2 (torch's) writes Python 2 names, e.g. __builtin__.set
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            known = _SAFE_GLOBALS.get((module, name))
            if known is not None:
                return known
            if module == "torch" and name.endswith("Storage"):
                # torch resolves the typed storages itself before asking; this is a fallback
                storage = getattr(torch, name, None)
                if isinstance(storage, type):
                    return storage
            if module.startswith(prefixes) and name.isidentifier() and "." not in name:
                return stubs.setdefault((module, name), _stub(module, name))
            raise Refused(f"refused to resolve {module}.{name}")

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    restricted = ModuleType("stemkit_restricted_pickle")
    restricted.Unpickler = Unpickler  # type: ignore[attr-defined]
    restricted.load = load  # type: ignore[attr-defined]
    restricted.__version__ = pickle.format_version  # type: ignore[attr-defined]
    return restricted


def restricted_load(
    path: str | os.PathLike[str], *, packages: tuple[str, ...] = DEFAULT_PACKAGES
) -> Any:
    """``torch.load`` of ``path`` through the restricted unpickler (see the module docstring).

    Both of torch's formats are read (the zip archive of torch ≥ 1.6 and the older plain
    pickle stream of the Demucs v1 files); tensors land on the CPU.

    Args:
        path: the file.
        packages: top-level packages whose classes may appear (besides ``torch.nn.modules``),
            as :class:`PickledModule` stubs.

    Returns:
        What the file holds: tensors, plain containers and stubs.

    Raises:
        CheckpointError: the file cannot be read, or asks for anything outside the allowed set
            (named in the message; nothing was run).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    allowed = ", ".join(["torch.nn", *packages])
    try:
        with warnings.catch_warnings():
            # torch warns that the stubs' source cannot be checked against the saved source
            warnings.simplefilter("ignore")
            return torch.load(  # nosec: the pickle module resolves only the allowed names
                path,
                map_location="cpu",
                pickle_module=_restricted_pickle_module(packages),
                weights_only=False,
            )
    except Refused as error:
        raise CheckpointError(
            f"{path}: not loaded: {error} (only tensors, plain containers and the module "
            f"classes of {allowed} are accepted; nothing from the file was run)"
        ) from None
    except (
        pickle.UnpicklingError,
        RuntimeError,
        OSError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable torch.save file ({detail})") from None


def read_pickled_module(
    path: str | os.PathLike[str], *, packages: tuple[str, ...] = DEFAULT_PACKAGES
) -> PickledModule:
    """Read a ``torch.save(model)`` file into a tree of :class:`PickledModule` stubs.

    Args:
        path: the file.
        packages: top-level packages whose classes may appear (besides ``torch.nn.modules``).

    Returns:
        The root module's stub.

    Raises:
        CheckpointError: see :func:`restricted_load`; or the file holds no module at its root.
    """
    root = restricted_load(path, packages=packages)
    if not isinstance(root, PickledModule):
        raise CheckpointError(
            f"{path}: holds a {type(root).__name__}, not a pickled model (torch.save(model))"
        )
    return root


def named_children(module: PickledModule) -> Iterator[tuple[str, PickledModule]]:
    """The direct submodules of ``module`` in registration order (``None`` slots skipped)."""
    children = module.attributes.get("_modules") or {}
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(child, PickledModule):
            raise CheckpointError(f"{module.class_path}: submodule {name} is not a module")
        yield name, child


def module_state_dict(module: PickledModule, prefix: str = "") -> dict[str, Tensor]:
    """The ``state_dict`` the pickled module had: parameters and persistent buffers, by key."""
    state: dict[str, Tensor] = {}
    attributes = module.attributes
    skipped = attributes.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (attributes.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(value, Tensor):
                raise CheckpointError(f"{module.class_path}: {name} is not a tensor")
            state[prefix + name] = value.detach()
    for name, child in named_children(module):
        state.update(module_state_dict(child, f"{prefix}{name}."))
    return state
