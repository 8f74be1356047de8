"""Oracle separators: the upper bounds computed from the true stems (sigsep-mus-oracle).

Each oracle separates a mixture with a time-frequency filter built from the reference stems
of the same track, so it tells what a filter of that family could reach with perfect
knowledge. The definitions follow the public sigsep-mus-oracle scripts (reference/anchors.md
§3): STFT of 2048 samples with a hop of 1024 (scipy's default half overlap), periodic Hann
window, one filter per source, applied to the mixture and inverted.

* ``ibm1`` / ``ibm2``: ideal binary mask, per channel. A source takes a bin when
  ``|Y_j|^α / |X|^α ≥ θ`` with ``θ = 0.5`` and ``α = 1`` (magnitudes) or ``α = 2`` (powers),
  ``X`` being the mixture. Several sources, or none, may take a bin.
* ``irm1`` / ``irm2``: ideal ratio mask, per channel, ``|Y_j|^α / Σ_k |Y_k|^α`` with ``α = 1``
  or ``2``. The masks of a bin sum to one.
* ``mwf``: multichannel Wiener oracle with the local Gaussian model and a time-invariant
  spatial covariance per source and bin:

  - ``R_j(f)`` is the frame average of ``y_j yᴴ_j / v_j`` with ``v_j = mean_c |y_j|²``,
    scaled to trace ``nb_channels`` and floored by ``δ·I``;
  - the PSD is refined to ``v_j = yᴴ_j R_j⁻¹ y_j / nb_channels`` (so that ``v_j R_j`` fits the
    observed covariance even when the channels are correlated);
  - ``ŷ_j = v_j R_j (Σ_k v_k R_k)⁻¹ x``.

  The estimates of all sources sum to the mixture wherever the mixture covariance is
  invertible. Sigsep floors ``R_j`` with the float64 machine epsilon, which vanishes against a
  trace of ``nb_channels``; stems panned by a plain gain have an exactly rank-one ``R_j`` and
  the refined PSD then becomes round-off noise. We floor with ``δ = 1e-6`` instead, small
  enough to keep the spatial selectivity and large enough for ``R_j⁻¹`` to be meaningful.

The edges are zero-padded by half a window as scipy does; scipy's spectrum scaling is left out
(masks and the Wiener gain are scale-free), which only moves the tiny ``eps`` floors relative
to the signal.

Usage: an oracle needs the stems of the very mixture it separates, so run it on whole tracks
(``segment=None``, no shifts); :func:`stemkit.evaluation.evaluate` gives it each track's
references itself::

    oracle = build("irm2")
    with oracle.references(stems):        # (nb_sources, nb_channels, nb_samples)
        estimates = oracle(stems.sum(0)[None])
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stemkit import MUSDB_SOURCES
from stemkit.dsp.stft import ISTFT, STFT
from stemkit.errors import StemkitError
from stemkit.models.base import SeparationModel
from stemkit.models.registry import register

__all__ = [
    "KINDS",
    "OracleReferenceError",
    "OracleSeparator",
    "ideal_binary_mask",
    "ideal_ratio_masks",
    "oracle_wiener",
    "refined_psd",
    "spatial_covariance",
]

#: The oracle names, as registered.
KINDS: tuple[str, ...] = ("ibm1", "ibm2", "irm1", "irm2", "mwf")

#: Mask denominator floor: float64 machine epsilon, as sigsep.
EPS = float(np.finfo(np.float64).eps)

#: Floor of the trace-normalised spatial covariances (see the module docstring).
SPATIAL_FLOOR = 1e-6

# Frames per block when the 2×2 mixture covariances are built and inverted: bounds the memory
# of that step to a few tens of MB whatever the track length.
_BLOCK_FRAMES = 1024


class OracleReferenceError(StemkitError, ValueError):
    """An oracle was run without references, or with references that do not fit the mixture."""


def ideal_binary_mask(
    source_spec: Tensor,
    mix_spec: Tensor,
    alpha: float = 1.0,
    theta: float = 0.5,
    eps: float = EPS,
) -> Tensor:
    """Ideal binary mask of one source.

    Args:
        source_spec: complex (or magnitude) STFT of the source ``(..., nb_bins, nb_frames)``.
        mix_spec: complex (or magnitude) STFT of the mixture, the same shape.
        alpha: exponent of the magnitudes (1: magnitude ratio, 2: power ratio).
        theta: threshold on the ratio ``|Y|^α / (eps + |X|^α)``.
        eps: floor of the denominator.

    Returns:
        Real ``(..., nb_bins, nb_frames)`` of zeros and ones, in the real dtype of the input.
    """
    ratio = source_spec.abs().pow(alpha) / (eps + mix_spec.abs().pow(alpha))
    return (ratio >= theta).to(ratio.dtype)


def ideal_ratio_masks(source_specs: Tensor, alpha: float = 2.0, eps: float = EPS) -> Tensor:
    """Ideal ratio masks of all sources.

    Args:
        source_specs: complex (or magnitude) STFTs ``(nb_sources, ..., nb_bins, nb_frames)``.
        alpha: exponent of the magnitudes (1: magnitudes, 2: powers).
        eps: floor of the denominator.

    Returns:
        Real masks of the input's shape, in [0, 1]; over the source axis they sum to
        ``total / (eps + total)``, i.e. to one wherever the sources are not all silent.
    """
    powers = source_specs.abs().pow(alpha)
    return powers / (eps + powers.sum(dim=0, keepdim=True))


def spatial_covariance(
    source_stft: Tensor, eps: float = EPS, floor: float = SPATIAL_FLOOR
) -> Tensor:
    """Time-invariant spatial covariance of one source (sigsep's MWF oracle).

    Args:
        source_stft: complex ``(nb_channels, nb_bins, nb_frames)``, 1 or 2 channels.
        eps: floor of the PSD that normalises each frame's outer product.
        floor: multiple of the identity added after scaling to trace ``nb_channels``.

    Returns:
        Complex Hermitian ``(nb_bins, nb_channels, nb_channels)``.
    """
    nb_channels = _check_channels(source_stft)
    psd = source_stft.abs().square().mean(dim=0)  # (nb_bins, nb_frames)
    weight = 1.0 / (eps + psd)
    nb_frames = source_stft.shape[-1]
    # Entry by entry: an einsum over (c, d, f, t) would hold nb_channels² full spectrograms.
    cov = source_stft.new_zeros((source_stft.shape[1], nb_channels, nb_channels))
    for c in range(nb_channels):
        for d in range(c, nb_channels):
            entry = (source_stft[c] * source_stft[d].conj() * weight).sum(dim=-1) / nb_frames
            cov[:, c, d] = entry
            cov[:, d, c] = entry.conj()
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).real.sum(dim=-1)  # (nb_bins,)
    # A source silent in a whole bin has a zero covariance: take the identity there, as its
    # PSD is zero anyway.
    eye = torch.eye(nb_channels, dtype=cov.dtype, device=cov.device)
    silent = (trace <= 0)[:, None, None]
    safe_trace = torch.where(trace > 0, trace, torch.ones_like(trace))
    cov = torch.where(silent, eye, cov * (nb_channels / safe_trace)[:, None, None])
    return cov + floor * eye


def refined_psd(source_stft: Tensor, covariance: Tensor) -> Tensor:
    """PSD that makes ``v R`` fit the observed covariance: ``yᴴ R⁻¹ y / nb_channels``.

    Args:
        source_stft: complex ``(nb_channels, nb_bins, nb_frames)``.
        covariance: its spatial covariance ``(nb_bins, nb_channels, nb_channels)``.

    Returns:
        Real non-negative ``(nb_bins, nb_frames)``.
    """
    nb_channels = _check_channels(source_stft)
    inverse = _inverse(covariance)
    quad = torch.einsum("cft,fcd,dft->ft", source_stft.conj(), inverse, source_stft).real
    return (quad / nb_channels).clamp_min(0.0)


def oracle_wiener(
    source_stfts: Tensor, mix_stft: Tensor, eps: float = EPS, floor: float = SPATIAL_FLOOR
) -> Tensor:
    """Multichannel Wiener oracle on STFTs (all sources in memory; see the module docstring).

    Args:
        source_stfts: complex ``(nb_sources, nb_channels, nb_bins, nb_frames)`` of the true
            sources, 1 or 2 channels.
        mix_stft: complex ``(nb_channels, nb_bins, nb_frames)`` of the mixture to filter.
        eps: PSD floor of the covariance estimate.
        floor: spatial covariance floor.

    Returns:
        Complex ``(nb_sources, nb_channels, nb_bins, nb_frames)`` estimates.
    """
    psds, covs = _wiener_parameters(source_stfts, eps, floor)
    z = _whiten(psds, covs, mix_stft)
    return torch.stack([_apply_source(p, r, z) for p, r in zip(psds, covs, strict=True)])


class OracleSeparator(SeparationModel):
    """A separator that cheats: it filters the mixture with masks made from the true stems.

    Call :meth:`set_references` (or use the :meth:`references` context manager) with the stems
    of the mixture before ``forward``; run it on whole tracks (``segment=None``, no shifts), as
    the references are aligned with the input sample by sample.

    Args:
        kind: one of ``"ibm1"``, ``"ibm2"``, ``"irm1"``, ``"irm2"``, ``"mwf"``.
        sources: stem names, in the order of the references.
        sample_rate: rate in Hz of the mixtures and references.
        audio_channels: 1 or 2.
        n_fft: STFT size (2048 as sigsep).
        n_hop: hop size (1024 as sigsep).
        theta: threshold of the binary masks.

    Attributes:
        requires_references: True: generic code (evaluation) must give the references first.
    """

    requires_references: ClassVar[bool] = True

    @property
    def default_segment(self) -> float | None:
        """None: the references are aligned with the whole track, sample by sample."""
        return None

    def __init__(
        self,
        kind: str = "irm2",
        sources: tuple[str, ...] | list[str] = MUSDB_SOURCES,
        sample_rate: int = 44100,
        audio_channels: int = 2,
        n_fft: int = 2048,
        n_hop: int = 1024,
        theta: float = 0.5,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown oracle kind {kind!r}; choose one of {', '.join(KINDS)}")
        if audio_channels not in (1, 2):
            raise ValueError(f"oracles handle 1 or 2 channels, got audio_channels={audio_channels}")
        super().__init__(sources, sample_rate, audio_channels)
        self.kind = kind
        self.theta = float(theta)
        self.stft = STFT(n_fft, n_hop, center=True)
        self.istft = ISTFT(n_fft, n_hop, center=True)
        for transform in (self.stft, self.istft):
            # A float32 Hann window is off by up to ~1e-2 relative in its first samples, which
            # the float64 work of the MWF would inherit; the transforms cast it down as needed.
            transform.window = torch.hann_window(n_fft, dtype=torch.float64)
        self._references: Tensor | None = None

    @property
    def alpha(self) -> float:
        """Exponent of the magnitudes in the masks (1 or 2; 2 for ``mwf``, which uses powers)."""
        return 1.0 if self.kind.endswith("1") else 2.0

    def set_references(
        self, stems: Tensor | np.ndarray | None, rest: Tensor | np.ndarray | None = None
    ) -> None:
        """Give the true stems of the next mixture(s); ``None`` forgets them.

        Args:
            stems: ``(nb_sources, nb_channels, nb_samples)`` for a batch of one mixture, or
                ``(batch, nb_sources, nb_channels, nb_samples)``, sources in ``self.sources``
                order, at ``self.sample_rate``.
            rest: the sum of the track's other stems, ``(nb_channels, nb_samples)`` (or with a
                batch dimension), when the oracle separates only some of them: the masks and
                the Wiener gain then count it as one more source, whose estimate is dropped
                (a vocals-only ratio mask is ``|V|^α / (|V|^α + |rest|^α)``, not 1).

        Raises:
            OracleReferenceError: wrong number of dimensions, sources or channels.
        """
        if stems is None:
            self._references = None
            return
        refs = torch.as_tensor(stems)
        if refs.ndim not in (3, 4):
            raise OracleReferenceError(
                f"references must be (sources, channels, time) or (batch, sources, channels, "
                f"time), got shape {tuple(refs.shape)}"
            )
        nb_sources, nb_channels = refs.shape[-3], refs.shape[-2]
        if nb_sources != len(self.sources) or nb_channels != self.audio_channels:
            raise OracleReferenceError(
                f"references of shape {tuple(refs.shape)} do not fit the oracle, which expects "
                f"{len(self.sources)} sources {self.sources} of {self.audio_channels} channel(s)"
            )
        if rest is not None:
            rest_refs = torch.as_tensor(rest).unsqueeze(-3)
            if rest_refs.shape[:-3] + rest_refs.shape[-2:] != refs.shape[:-3] + refs.shape[-2:]:
                raise OracleReferenceError(
                    f"the rest of the track {tuple(rest_refs.shape[:-3] + rest_refs.shape[-2:])} "
                    f"does not match the references {tuple(refs.shape)}"
                )
            # one more row: filtered like the others, dropped by forward
            refs = torch.cat([refs, rest_refs.to(refs.dtype)], dim=-3)
        if not refs.is_floating_point():
            raise OracleReferenceError(f"references must be float audio, got {refs.dtype}")
        self._references = refs.detach()

    @contextmanager
    def references(self, stems: Tensor | np.ndarray) -> Iterator[OracleSeparator]:
        """Context in which the oracle knows ``stems`` (see :meth:`set_references`).

        The references set before the context come back on exit.
        """
        previous = self._references
        self.set_references(stems)
        try:
            yield self
        finally:
            self._references = previous

    def forward(self, mixture: Tensor) -> Tensor:
        """Separate ``(batch, channels, time)`` into ``(batch, sources, channels, time)``.

        The filters come from the references, the filtered signal is ``mixture`` itself.

        Raises:
            OracleReferenceError: no references, or references that do not match the mixture
                in batch size or length (chunked or shifted inference).
        """
        refs = self._aligned_references(mixture)
        stems = torch.stack(
            [self._separate_one(mix, ref) for mix, ref in zip(mixture, refs, strict=True)]
        )
        return stems[:, : len(self.sources)]  # without the rest of the track, if given

    def _aligned_references(self, mixture: Tensor) -> Tensor:
        if self._references is None:
            raise OracleReferenceError(
                f"the {self.kind} oracle needs the true stems of the mixture: call "
                "set_references(stems) first (stemkit evaluate does it for each track); an "
                "oracle cannot separate a mixture whose stems are unknown"
            )
        refs = self._references
        if refs.ndim == 3:
            refs = refs.unsqueeze(0)
        if mixture.ndim != 3 or mixture.shape[1] != self.audio_channels:
            raise OracleReferenceError(
                f"the mixture must be (batch, {self.audio_channels}, time), got "
                f"{tuple(mixture.shape)}"
            )
        if refs.shape[0] != mixture.shape[0] or refs.shape[-1] != mixture.shape[-1]:
            raise OracleReferenceError(
                f"references {tuple(refs.shape)} do not match the mixture batch "
                f"{tuple(mixture.shape)}: give one set of stems per mixture, of the same length; "
                "run oracles on whole tracks (segment=None, no shifts)"
            )
        return refs.to(mixture.device)

    def _separate_one(self, mix: Tensor, refs: Tensor) -> Tensor:
        """``mix`` ``(channels, time)`` and ``refs`` ``(sources, channels, time)`` → stems."""
        length = mix.shape[-1]
        # The Wiener gain inverts 2×2 matrices that can be near singular: float64 there.
        work = torch.float64 if self.kind == "mwf" else mix.dtype
        # Half a window of zeros on each side, which the centred STFT's reflection leaves as
        # zeros: the edge frames are those of scipy's zero-boundary STFT that sigsep uses.
        pad = self.stft.n_fft // 2
        # Sources are padded, converted and transformed one at a time, and each estimate goes
        # back to the input dtype at once: a long track is never copied whole in float64.
        mix_stft = self.stft(F.pad(mix.to(work), (pad, pad)))
        specs = (self.stft(F.pad(ref.to(work), (pad, pad))) for ref in refs)

        def inverse(spec: Tensor) -> Tensor:
            return self.istft(spec, length + 2 * pad)[..., pad : pad + length].to(mix.dtype)

        if self.kind == "mwf":
            psds, covs = _wiener_parameters(specs)
            z = _whiten(psds, covs, mix_stft)
            estimates = [inverse(_apply_source(p, r, z)) for p, r in zip(psds, covs, strict=True)]
        elif self.kind.startswith("ibm"):
            estimates = [
                inverse(mix_stft * ideal_binary_mask(spec, mix_stft, self.alpha, self.theta))
                for spec in specs
            ]
        else:
            # One power spectrogram per source rather than all complex STFTs at once: half the
            # memory on long tracks.
            powers = [spec.abs().pow(self.alpha) for spec in specs]
            total = EPS + torch.stack(powers).sum(dim=0)
            estimates = [inverse(mix_stft * (power / total)) for power in powers]
        return torch.stack(estimates)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, sources={self.sources}"


def _check_channels(stft: Tensor) -> int:
    nb_channels = stft.shape[0]
    if stft.ndim != 3 or nb_channels not in (1, 2):
        raise ValueError(
            f"expected a complex (nb_channels, nb_bins, nb_frames) STFT with 1 or 2 channels, "
            f"got shape {tuple(stft.shape)}"
        )
    return int(nb_channels)


def _inverse(matrix: Tensor) -> Tensor:
    """Closed-form inverse of Hermitian ``(..., C, C)`` matrices, C in {1, 2}.

    Singular matrices (a zero determinant: all sources silent in that bin) get a zero inverse,
    so the filter outputs silence there. Closed form rather than batched LU: see
    reference/pitfalls.md.
    """
    if matrix.shape[-1] == 1:
        value = matrix[..., 0, 0]
        return torch.where(value != 0, 1.0 / value, torch.zeros_like(value))[..., None, None]
    a, b = matrix[..., 0, 0], matrix[..., 0, 1]
    c, d = matrix[..., 1, 0], matrix[..., 1, 1]
    det = a * d - b * c
    inv_det = torch.where(det != 0, 1.0 / det, torch.zeros_like(det))
    return (
        torch.stack([torch.stack([d, -b], dim=-1), torch.stack([-c, a], dim=-1)], dim=-2)
        * inv_det[..., None, None]
    )


def _wiener_parameters(
    source_stfts: Iterable[Tensor], eps: float = EPS, floor: float = SPATIAL_FLOOR
) -> tuple[list[Tensor], list[Tensor]]:
    """Refined PSDs ``(nb_bins, nb_frames)`` and spatial covariances of each source."""
    psds, covs = [], []
    for source in source_stfts:
        cov = spatial_covariance(source, eps, floor)
        covs.append(cov)
        psds.append(refined_psd(source, cov))
    return psds, covs


def _whiten(psds: list[Tensor], covs: list[Tensor], mix_stft: Tensor) -> Tensor:
    """``z = (Σ_j v_j R_j)⁻¹ x`` per bin and frame, built block by block of frames.

    Args:
        psds: per source, real ``(nb_bins, nb_frames)``.
        covs: per source, complex ``(nb_bins, nb_channels, nb_channels)``.
        mix_stft: complex ``(nb_channels, nb_bins, nb_frames)``.
    """
    z = torch.empty_like(mix_stft)
    nb_frames = mix_stft.shape[-1]
    for start in range(0, nb_frames, _BLOCK_FRAMES):
        frames = slice(start, start + _BLOCK_FRAMES)
        mix_cov = sum(
            (
                psd[:, frames, None, None] * cov[:, None]
                for psd, cov in zip(psds, covs, strict=True)
            ),
            start=torch.zeros((), dtype=mix_stft.dtype, device=mix_stft.device),
        )
        z[..., frames] = torch.einsum("ftcd,dft->cft", _inverse(mix_cov), mix_stft[..., frames])
    return z


def _apply_source(psd: Tensor, cov: Tensor, z: Tensor) -> Tensor:
    """``v_j R_j z``: ``(nb_bins, nb_frames)``, ``(nb_bins, C, C)``, ``(C, nb_bins, nb_frames)``."""
    return psd * torch.einsum("fcd,dft->cft", cov, z)


for _kind in KINDS:
    register(_kind)(functools.partial(OracleSeparator, _kind))
