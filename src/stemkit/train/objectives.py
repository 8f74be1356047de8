"""Training objectives by name: each model computes its own through the model contract.

The names and what each compares are :data:`stemkit.models.base.TRAINING_LOSSES`; a model
computes the waveform losses by default and overrides
:meth:`~stemkit.models.base.SeparationModel.training_loss` for its family's objective.
"""

from __future__ import annotations

from torch import Tensor

from stemkit.models.base import TRAINING_LOSSES, SeparationModel

__all__ = ["LOSSES", "compute_loss"]

#: Losses the trainer knows, and what each compares.
LOSSES = TRAINING_LOSSES


def compute_loss(model: SeparationModel, mixture: Tensor, stems: Tensor, loss: str) -> Tensor:
    """The training loss of ``model`` on one batch.

    Args:
        model: the model being trained.
        mixture: ``(batch, channels, time)``.
        stems: ``(batch, sources, channels, time)``, the targets in ``model.sources`` order.
        loss: a key of :data:`LOSSES`.

    Raises:
        StemkitError: an unknown loss, or one the model's family does not compute.
    """
    return model.training_loss(mixture, stems, loss)
