"""Short-time Fourier transform on native complex tensors, with the Open-Unmix conventions.

One-sided transform, Hann window of length ``n_fft``, no normalisation, reflect padding when
``center`` is set. The layout is ``(..., nb_bins, nb_frames)`` with ``nb_bins = n_fft // 2 + 1``:
a waveform ``(batch, channels, time)`` becomes ``(batch, channels, nb_bins, nb_frames)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

_WINDOWS = {"hann": torch.hann_window}
_ISTFT_CHUNK_VALUES = 1 << 23


def _make_window(window: str, n_fft: int) -> Tensor:
    if window not in _WINDOWS:
        raise ValueError(f"unknown STFT window {window!r}; choose one of {sorted(_WINDOWS)}")
    return _WINDOWS[window](n_fft)


def _check_sizes(n_fft: int, n_hop: int) -> None:
    if n_fft <= 0 or n_hop <= 0:
        raise ValueError(f"n_fft and n_hop must be positive, got n_fft={n_fft}, n_hop={n_hop}")
    if n_hop > n_fft:
        raise ValueError(f"n_hop ({n_hop}) larger than n_fft ({n_fft}) skips samples; lower it")


class _Transform(nn.Module):
    """What the forward and inverse transforms share: sizes, centring and the window.

    The window is a non-persistent buffer: it follows ``.to(device)`` but stays out of the
    ``state_dict``, so models keep the same keys as their upstream counterparts.
    """

    window: Tensor

    def __init__(
        self, n_fft: int = 4096, n_hop: int = 1024, center: bool = False, window: str = "hann"
    ) -> None:
        super().__init__()
        _check_sizes(n_fft, n_hop)
        self.n_fft = n_fft
        self.n_hop = n_hop
        self.center = center
        self.register_buffer("window", _make_window(window, n_fft), persistent=False)

    @property
    def nb_bins(self) -> int:
        """Number of frequency bins, ``n_fft // 2 + 1``."""
        return self.n_fft // 2 + 1

    def extra_repr(self) -> str:
        return f"n_fft={self.n_fft}, n_hop={self.n_hop}, center={self.center}"


class STFT(_Transform):
    """Multichannel STFT: waveform ``(..., time)`` → complex ``(..., nb_bins, nb_frames)``.

    Args:
        n_fft: FFT size and window length in samples.
        n_hop: hop size in samples.
        center: pad ``n_fft // 2`` samples on both sides (reflect) so that frame ``k`` is centred
            on sample ``k * n_hop``. Needed for perfect reconstruction; Open-Unmix trains with
            ``center=False`` and separates with ``center=True``.
        window: window name; only ``"hann"`` (periodic) for now.
    """

    def forward(self, waveform: Tensor) -> Tensor:
        """Transform ``waveform`` ``(..., time)`` into complex ``(..., nb_bins, nb_frames)``."""
        if waveform.is_complex():
            raise TypeError("STFT expects a real waveform, got a complex tensor")
        nb_timesteps = waveform.shape[-1]
        minimum = self.n_fft // 2 + 1 if self.center else self.n_fft
        if nb_timesteps < minimum:
            raise ValueError(
                f"signal of {nb_timesteps} samples is too short for an STFT with n_fft="
                f"{self.n_fft} (center={self.center}); give at least {minimum} samples"
            )
        leading = waveform.shape[:-1]
        spec = torch.stft(
            waveform.reshape(-1, nb_timesteps),
            n_fft=self.n_fft,
            hop_length=self.n_hop,
            window=self.window.to(waveform.dtype),
            center=self.center,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.reshape(*leading, *spec.shape[-2:])

    def frame_count(self, nb_timesteps: int) -> int:
        """Number of frames :meth:`forward` gives for a signal of ``nb_timesteps`` samples."""
        padded = nb_timesteps + 2 * (self.n_fft // 2) if self.center else nb_timesteps
        return 1 + (padded - self.n_fft) // self.n_hop

    def frames(self, waveform: Tensor, start: int, stop: int) -> Tensor:
        """Frames ``[start, stop)`` of :meth:`forward`, from only the samples they need.

        The frames' samples of the (reflect-padded, when ``center``) signal are gathered and
        transformed without centring, which is what :meth:`forward` computes on the whole
        signal: a long signal can be transformed block by block, and a block needs memory in
        proportion to its frames only.

        Args:
            waveform: real ``(..., time)``.
            start: first frame.
            stop: one past the last frame, at most :meth:`frame_count` of ``time``.

        Returns:
            Complex ``(..., nb_bins, stop - start)``.
        """
        if waveform.is_complex():
            raise TypeError("STFT expects a real waveform, got a complex tensor")
        nb_timesteps = waveform.shape[-1]
        minimum = self.n_fft // 2 + 1 if self.center else self.n_fft
        if nb_timesteps < minimum:
            raise ValueError(
                f"signal of {nb_timesteps} samples is too short for an STFT with n_fft="
                f"{self.n_fft} (center={self.center}); give at least {minimum} samples"
            )
        nb_frames = self.frame_count(nb_timesteps)
        if not 0 <= start < stop <= nb_frames:
            raise ValueError(
                f"frames [{start}, {stop}) lie outside the {nb_frames} frames of the signal"
            )
        # padded-signal positions of the block, mapped back onto the signal as reflect padding
        # maps them (a mirror about the first and the last sample)
        pad = self.n_fft // 2 if self.center else 0
        first, end = start * self.n_hop - pad, (stop - 1) * self.n_hop + self.n_fft - pad
        if 0 <= first and end <= nb_timesteps:
            # inside the signal: a view, no gathered copy
            piece = waveform[..., first:end]
        else:
            index = torch.arange(first, end, device=waveform.device).abs()
            index = torch.where(index >= nb_timesteps, 2 * (nb_timesteps - 1) - index, index)
            piece = waveform.index_select(-1, index)
        leading = waveform.shape[:-1]
        spec = torch.stft(
            piece.reshape(-1, piece.shape[-1]),
            n_fft=self.n_fft,
            hop_length=self.n_hop,
            window=self.window.to(waveform.dtype),
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        return spec.reshape(*leading, *spec.shape[-2:])


class ISTFT(_Transform):
    """Inverse of :class:`STFT`: complex ``(..., nb_bins, nb_frames)`` → waveform ``(..., time)``.

    Args:
        n_fft: FFT size and window length in samples.
        n_hop: hop size in samples.
        center: must match the forward transform.
        window: window name; only ``"hann"`` for now.
    """

    def forward(self, spec: Tensor, length: int | None = None) -> Tensor:
        """Invert ``spec`` ``(..., nb_bins, nb_frames)`` into ``(..., time)``.

        Args:
            spec: complex spectrogram.
            length: number of output samples; the signal is cropped or zero-padded to it. Give
                the input length of the forward transform to undo it exactly.
        """
        if not spec.is_complex():
            raise TypeError("ISTFT expects a complex spectrogram (..., nb_bins, nb_frames)")
        if spec.shape[-2] != self.n_fft // 2 + 1:
            raise ValueError(
                f"spectrogram has {spec.shape[-2]} bins, expected {self.n_fft // 2 + 1} for "
                f"n_fft={self.n_fft}"
            )
        leading = spec.shape[:-2]
        rows = spec.reshape(-1, *spec.shape[-2:])
        if self.center and _numpy_inference(spec):
            # Inference on the CPU: the same sum, block by block (OverlapAdd), 2-4× faster than
            # torch.istft and without its (rows, n_fft, nb_frames) buffer.
            nb_frames = rows.shape[-1]
            if length is None:  # torch.istft's: the padded signal less its centring
                length = self.n_fft + self.n_hop * (nb_frames - 1) - 2 * (self.n_fft // 2)
            out = rows.real.new_zeros((rows.shape[0], length))
            inverse = OverlapAdd(self, out, nb_frames)
            inverse.add(rows)
            return inverse.finish().reshape(*leading, length)
        # The inverse FFT of all frames is a (rows, n_fft, nb_frames) buffer, twice the size of
        # the complex input; a few rows at a time bound it (~32 MB) at no cost in speed.
        per_chunk = max(1, _ISTFT_CHUNK_VALUES // (self.n_fft * rows.shape[-1]))
        window = self.window.to(spec.real.dtype)
        pieces = [
            torch.istft(
                chunk,
                n_fft=self.n_fft,
                hop_length=self.n_hop,
                window=window,
                center=self.center,
                normalized=False,
                onesided=True,
                length=length,
            )
            for chunk in rows.split(per_chunk)
        ]
        waveform = pieces[0] if len(pieces) == 1 else torch.cat(pieces)
        return waveform.reshape(*leading, waveform.shape[-1])


def magnitude(spec: Tensor, mono: bool = False) -> Tensor:
    """Magnitude (power 1) of a complex spectrogram.

    Args:
        spec: complex ``(..., nb_channels, nb_bins, nb_frames)``.
        mono: average the magnitudes over the channel axis (``-3``), keeping it with size 1.
            Downmixing magnitudes rather than waveforms keeps the energy of out-of-phase
            channels.

    Returns:
        Real ``(..., nb_channels, nb_bins, nb_frames)``, or ``(..., 1, nb_bins, nb_frames)``
        when ``mono``.
    """
    mag = spec.abs()
    if mono:
        mag = mag.mean(dim=-3, keepdim=True)
    return mag


def bandwidth_to_max_bin(rate: float, n_fft: int, bandwidth: float) -> int:
    """Number of bins on the one-sided grid whose frequency is at most ``bandwidth`` Hz.

    The grid is ``linspace(0, rate / 2, n_fft // 2 + 1)``; 16 kHz at 44.1 kHz with
    ``n_fft=4096`` gives 1487.
    """
    freqs = np.linspace(0, float(rate) / 2, n_fft // 2 + 1, endpoint=True)
    below = np.nonzero(freqs <= bandwidth)[0]
    if below.size == 0:
        raise ValueError(f"bandwidth {bandwidth} Hz keeps no frequency bin; give a value >= 0")
    return int(below.max()) + 1


class OverlapAdd:
    """Inverse STFT assembled block by block into a preallocated waveform.

    The inverse STFT is linear in the frames: each frame's inverse FFT, windowed, is added at
    its hop offset, and the sum is divided by the overlap-added squared window (the *window
    envelope*). Here the un-normalised sum is accumulated into ``out`` block after block, and a
    stretch of samples is divided by its envelope as soon as no later frame can reach it. The
    result equals :class:`ISTFT` on the whole spectrogram (up to float rounding where blocks
    meet), while only one block of frames is ever transformed at a time: the memory beyond
    ``out`` is ``O(block)``.

    Frames must be given in order, covering ``nb_frames`` in total; :meth:`finish` returns
    ``out``.

    Args:
        istft: the inverse transform to reproduce (sizes, window, centring).
        out: zero-filled, contiguous ``(..., time)`` buffer (``time`` = the ``length`` that
            :class:`ISTFT` would be given); the leading dimensions match the spectrogram
            blocks' ``(..., nb_bins, nb_frames)``.
        nb_frames: total number of frames that will be added.
    """

    # frames transformed at once inside one add(): bounds the (rows, frames, n_fft) buffer and
    # keeps it in cache (32 frames: 0.078 s against 0.091 s for 256, 8 rows of 30 s)
    _FRAMES_PER_STEP = 32

    def __init__(self, istft: ISTFT, out: Tensor, nb_frames: int) -> None:
        if out.is_complex() or not out.is_contiguous():
            raise ValueError("OverlapAdd needs a real, contiguous output buffer (..., time)")
        self.n_fft = istft.n_fft
        self.n_hop = istft.n_hop
        self.window = istft.window.to(device=out.device, dtype=out.dtype)
        # padded-signal sample p lands at out[..., p - offset] (centring crops n_fft // 2)
        self.offset = istft.n_fft // 2 if istft.center else 0
        self.out = out
        self.rows = out.view(-1, out.shape[-1])
        self.length = out.shape[-1]
        self.nb_frames = nb_frames
        self.next_frame = 0
        self.normalised = 0  # padded-signal samples below this are final
        # Where every frame that can reach a sample exists, the envelope is periodic in the
        # hop: one period, Σ_m window²(r + m·n_hop), serves the whole inside of the signal.
        squares = self.window.square()
        squares = nn.functional.pad(squares, (0, -self.n_fft % self.n_hop))
        self.period = squares.reshape(-1, self.n_hop).sum(dim=0)
        self.inside = (self.n_fft - self.n_hop, self.nb_frames * self.n_hop)

    def add(self, spec: Tensor) -> None:
        """Add the next frames ``(..., nb_bins, nb_block_frames)`` (complex)."""
        if not spec.is_complex() or spec.shape[-2] != self.n_fft // 2 + 1:
            raise ValueError(
                f"expected a complex spectrogram with {self.n_fft // 2 + 1} bins, got "
                f"{'complex' if spec.is_complex() else 'real'} {tuple(spec.shape)}"
            )
        count = spec.shape[-1]
        if self.next_frame + count > self.nb_frames:
            raise ValueError(
                f"{self.next_frame + count} frames added, only {self.nb_frames} announced"
            )
        rows = spec.reshape(-1, *spec.shape[-2:])
        if rows.shape[0] != self.rows.shape[0]:
            raise ValueError(
                f"spectrogram block {tuple(spec.shape)} does not match the output "
                f"{tuple(self.out.shape)}"
            )
        for piece in rows.split(self._FRAMES_PER_STEP, dim=-1):
            frames = _windowed_frames(piece, self.n_fft, self.window)
            signal = _overlap_add(frames, self.n_hop)
            self._accumulate(signal, self.next_frame * self.n_hop)
            self.next_frame += piece.shape[-1]
        # later frames start at next_frame * n_hop: everything before it is complete
        self._normalise(self.next_frame * self.n_hop)

    def finish(self) -> Tensor:
        """Normalise what remains and return the waveform ``out``."""
        if self.next_frame != self.nb_frames:
            raise ValueError(f"only {self.next_frame} of {self.nb_frames} frames were added")
        self._normalise(self.n_fft + self.n_hop * (self.nb_frames - 1))
        return self.out

    def _accumulate(self, signal: Tensor, start: int) -> None:
        lo = max(start, self.offset)
        hi = min(start + signal.shape[-1], self.offset + self.length)
        if lo < hi:
            self.rows[:, lo - self.offset : hi - self.offset] += signal[:, lo - start : hi - start]

    def _normalise(self, stop: int) -> None:
        start, self.normalised = self.normalised, stop
        lo = max(start, self.offset)
        hi = min(stop, self.offset + self.length)
        if lo >= hi:
            return
        envelope = self._envelope(lo, hi)
        if bool((envelope.abs() < 1e-11).any()):
            raise ValueError(
                f"the window overlap-add is zero somewhere (n_fft={self.n_fft}, "
                f"n_hop={self.n_hop}): the inverse STFT is undefined; lower n_hop"
            )
        self.rows[:, lo - self.offset : hi - self.offset] /= envelope

    def _envelope(self, lo: int, hi: int) -> Tensor:
        """Σ_k window²(p - k·n_hop) for padded-signal samples ``p`` in ``[lo, hi)``."""
        first, last = max(lo, self.inside[0]), min(hi, self.inside[1])
        if first >= last:
            return self._envelope_edge(lo, hi)
        offset = first % self.n_hop
        repeats = -(-(last - first + offset) // self.n_hop)
        middle = self.period.repeat(repeats)[offset : offset + last - first]
        parts = [self._envelope_edge(lo, first)] if lo < first else []
        parts.append(middle)
        if last < hi:
            parts.append(self._envelope_edge(last, hi))
        return torch.cat(parts) if len(parts) > 1 else middle

    def _envelope_edge(self, lo: int, hi: int) -> Tensor:
        """:meth:`_envelope` frame by frame (where some frames are missing: the ends)."""
        first = max(0, (lo - self.n_fft) // self.n_hop + 1)
        last = min(self.nb_frames - 1, (hi - 1) // self.n_hop)
        squares = self.window.square()[None, :, None].expand(1, self.n_fft, last - first + 1)
        envelope = _fold(squares.contiguous(), self.n_hop)[0]
        begin = first * self.n_hop
        if begin + envelope.shape[-1] < hi:  # past the last frame's end: nothing overlaps
            envelope = nn.functional.pad(envelope, (0, hi - begin - envelope.shape[-1]))
        return envelope[lo - begin : hi - begin]


def _numpy_inference(x: Tensor) -> bool:
    """Whether ``x`` may go through numpy: on the CPU, no gradient wanted, not being traced or
    exported (numpy calls would be frozen into the graph as constants)."""
    return (
        x.device.type == "cpu"
        and not (torch.is_grad_enabled() and x.requires_grad)
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
    )


def _windowed_frames(spec: Tensor, n_fft: int, window: Tensor) -> Tensor:
    """Windowed inverse FFTs of the frames of ``(rows, nb_bins, count)``: ``(rows, count,
    n_fft)``, contiguous.

    On the CPU numpy's pocketfft transforms along the bins where they lie and writes each
    frame contiguously (half the time of torch's transform of the strided bins, and no copy
    for the overlap-add's reshape); elsewhere torch's.
    """
    if _numpy_inference(spec):
        rows, _, count = spec.shape
        frames = window.new_empty((rows, count, n_fft))
        np.fft.irfft(spec.numpy(), n=n_fft, axis=-2, out=frames.numpy().transpose(0, 2, 1))
        return frames.mul_(window)
    frames = torch.fft.irfft(spec, n=n_fft, dim=-2).mul_(window[:, None])
    return frames.transpose(-1, -2).contiguous()


def _overlap_add(frames: Tensor, n_hop: int) -> Tensor:
    """Overlap-add ``(rows, nb_frames, n_fft)`` at hop ``n_hop`` into ``(rows, time)``."""
    rows, count, n_fft = frames.shape
    if n_fft % n_hop:
        return _fold(frames.transpose(-1, -2), n_hop)
    # n_fft a multiple of n_hop: add the hop-long slices of the frames with a few shifted
    # sums, several times faster than nn.functional.fold on CPU
    overlap = n_fft // n_hop
    slices = frames.reshape(rows, count, overlap, n_hop)
    signal = frames.new_zeros(rows, count + overlap - 1, n_hop)
    for index in range(overlap):
        signal[:, index : index + count] += slices[:, :, index]
    return signal.reshape(rows, -1)


def _fold(frames: Tensor, n_hop: int) -> Tensor:
    """Overlap-add ``(rows, n_fft, nb_frames)`` at hop ``n_hop`` into ``(rows, time)``."""
    n_fft, count = frames.shape[-2], frames.shape[-1]
    length = n_fft + n_hop * (count - 1)
    signal = nn.functional.fold(
        frames, output_size=(1, length), kernel_size=(1, n_fft), stride=(1, n_hop)
    )
    return signal.reshape(frames.shape[0], length)
