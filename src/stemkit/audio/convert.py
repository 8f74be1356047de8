"""Sample-rate and channel conversions on in-memory signals ``(channels, time)``."""

from __future__ import annotations

import numpy as np
import soxr
import torch
from torch import Tensor

#: soxr quality used unless the caller asks otherwise ("HQ": 20-bit, steep low-pass).
DEFAULT_QUALITY = "HQ"


def resample(
    audio: Tensor, orig_rate: int, new_rate: int, *, quality: str = DEFAULT_QUALITY
) -> Tensor:
    """Change the sample rate of ``audio`` with soxr.

    Args:
        audio: float signal ``(channels, time)``.
        orig_rate: its rate in Hz.
        new_rate: the rate wanted, in Hz.
        quality: soxr quality name (``"QQ"``, ``"LQ"``, ``"MQ"``, ``"HQ"``, ``"VHQ"``).

    Returns:
        float32 ``(channels, new_time)`` on the CPU with ``new_time ≈ time · new_rate /
        orig_rate``; ``audio`` itself (as float32) when the rates are equal.

    Raises:
        ValueError: a rate is not a positive integer, or ``audio`` is not 2-D.
    """
    if audio.ndim != 2:
        raise ValueError(f"resample expects (channels, time), got shape {tuple(audio.shape)}")
    for name, rate in (("orig_rate", orig_rate), ("new_rate", new_rate)):
        if int(rate) != rate or rate <= 0:
            raise ValueError(f"{name} must be a positive integer number of Hz, got {rate}")
    if orig_rate == new_rate:
        return audio.to(torch.float32)
    # soxr works on (time, channels) arrays and keeps float32 in float32.
    frames = np.ascontiguousarray(audio.detach().cpu().numpy().T, dtype=np.float32)
    out = soxr.resample(frames, int(orig_rate), int(new_rate), quality=quality)
    return torch.from_numpy(np.ascontiguousarray(out.T))


def match_channels(audio: Tensor, channels: int, *, downmix: bool = False) -> Tensor:
    """Bring ``audio`` ``(nb_channels, time)`` to ``channels`` channels.

    A mono signal is copied to every output channel. A signal with more channels than asked is
    refused unless ``downmix`` is set, in which case its channels are averaged to mono (then
    copied if ``channels`` > 1): silently folding a 5.1 film mix into stereo is rarely what a
    user wants from a music separator.

    Args:
        audio: signal ``(nb_channels, time)``.
        channels: the channel count wanted (≥ 1).
        downmix: allow averaging when ``nb_channels > channels``.

    Returns:
        ``(channels, time)``; ``audio`` itself when the counts already agree.

    Raises:
        ValueError: the conversion is not defined (with the fix in the message).
    """
    if channels < 1:
        raise ValueError(f"the channel count asked for must be at least 1, got {channels}")
    nb_channels = audio.shape[0]
    if nb_channels == channels:
        return audio
    if nb_channels == 1:
        return audio.expand(channels, -1).clone()
    if nb_channels > channels:
        if not downmix:
            raise ValueError(
                f"it has {nb_channels} channels but {channels} "
                f"{'is' if channels == 1 else 'are'} expected; pass downmix=True "
                "(--downmix on the command line) to average them"
            )
        return audio.mean(dim=0, keepdim=True).expand(channels, -1).clone()
    raise ValueError(
        f"cannot turn {nb_channels} channels into {channels}: only mono can be spread to more "
        "channels; convert the file to mono or stereo first"
    )
