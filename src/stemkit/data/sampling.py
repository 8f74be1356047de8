"""Per-item random generators that depend on (seed, epoch, index) and nothing else.

A dataset that draws its excerpts from a generator built here gives the same item for the same
``(seed, epoch, index)`` whatever the number of DataLoader workers, the order in which they
ask for items, or what was drawn before; and a new epoch gives new excerpts.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that mixes all ``keys``; nearby keys give unrelated seeds.

    Args:
        *keys: integers (any sign, any size), e.g. ``(seed, epoch, index)``.

    Returns:
        An integer in ``[0, 2**63)``, the same on every platform and Python version.
    """
    text = ":".join(str(int(key)) for key in keys)
    digest = hashlib.sha256(text.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded from ``(seed, epoch, index)`` alone."""
    generator = torch.Generator()
    generator.manual_seed(derive_seed(seed, epoch, index))
    return generator


class EpochAware:
    """Mixin for datasets whose items are drawn per epoch: ``epoch`` and ``set_epoch``.

    The epoch lives in a shared-memory tensor, so DataLoader workers, persistent ones included,
    see :meth:`set_epoch` for every item they load after the call. Call :meth:`_init_epoch` in
    ``__init__``.
    """

    _epoch: torch.Tensor

    def _init_epoch(self) -> None:
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """The epoch the excerpts are drawn for."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Draw the excerpts of ``epoch`` from now on; call it before iterating the DataLoader."""
        self._epoch.fill_(int(epoch))
