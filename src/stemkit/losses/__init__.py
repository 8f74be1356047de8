"""Training losses, named by what they compare. No model computes its own loss."""

from stemkit.losses.waveform import l1_loss, mse_loss

__all__ = ["l1_loss", "mse_loss"]
