"""Band-split layouts: nominal band tables in Hz and their conversion to STFT bin widths.

A layout is a sequence of ``(width_hz, count)`` segments: ``count`` bands of ``width_hz`` each,
stacked from 0 Hz upwards; one last band always takes whatever lies above the final segment, up
to the Nyquist frequency. The named layouts are those of band-split RNN (reference/spec-notes.md
§4.2):

=========  ======================================================================  =====
name       segments (bandwidth × count, up to the edge)                            bands
=========  ======================================================================  =====
``v7``     100 Hz ×10 (1 k), 250 ×12 (4 k), 500 ×8 (8 k), 1 k ×8 (16 k), 2 k ×2     41
``bass``   50 ×10 (500), 100 ×5 (1 k), 500 ×6 (4 k), 1 k ×4 (8 k), 2 k ×4 (16 k)     30
``drums``  50 ×20 (1 k), 100 ×10 (2 k), 250 ×8 (4 k), 500 ×8 (8 k), 1 k ×8 (16 k)    55
``joint``  the drums segments, then 2 k ×2 (20 k)                                    57
=========  ======================================================================  =====

``vocals`` and ``other`` are aliases of ``v7``. Two conversions to bins are in use:

- ``"floor"`` (the replication and the authors' challenge code): a band of ``w`` Hz gets
  ``floor(w * nb_bins / (sample_rate / 2))`` bins whatever its position, so the floored bands
  cover a little less than their nominal range and the last band is wide.
- ``"edges"`` (an independent re-implementation): band edges at the exact Hz boundaries; a band
  holds the bins whose centre frequency ``k * sample_rate / n_fft`` lies in ``[low, high)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

from stemkit.errors import StemkitError

__all__ = [
    "CONVERSIONS",
    "LAYOUTS",
    "Layout",
    "band_widths",
    "layout_for_source",
    "resolve_layout",
]

#: ``(width_hz, count)`` segments; the remainder band is implicit.
Layout = tuple[tuple[float, int], ...]

_DRUMS: Layout = ((50, 20), (100, 10), (250, 8), (500, 8), (1000, 8))

LAYOUTS: dict[str, Layout] = {
    "v7": ((100, 10), (250, 12), (500, 8), (1000, 8), (2000, 2)),
    "bass": ((50, 10), (100, 5), (500, 6), (1000, 4), (2000, 4)),
    "drums": _DRUMS,
    "joint": (*_DRUMS, (2000, 2)),
}

_ALIASES = {"vocals": "v7", "other": "v7"}

CONVERSIONS = ("floor", "edges")

LayoutSpec = str | Sequence[Sequence[float]]


def resolve_layout(layout: LayoutSpec) -> Layout:
    """The ``(width_hz, count)`` segments of ``layout``.

    Args:
        layout: a name (``"v7"``, ``"vocals"``, ``"other"``, ``"bass"``, ``"drums"``,
            ``"joint"``) or explicit ``[[width_hz, count], ...]`` segments.

    Raises:
        StemkitError: unknown name, or segments that are not positive ``[width_hz, count]``
            pairs.
    """
    if isinstance(layout, str):
        name = _ALIASES.get(layout, layout)
        if name not in LAYOUTS:
            choices = sorted({*LAYOUTS, *_ALIASES})
            raise StemkitError(
                f"unknown band layout {layout!r}; choose one of {', '.join(choices)} or give "
                "[[width_hz, count], ...] segments"
            )
        return LAYOUTS[name]
    segments = []
    for segment in layout:
        if len(segment) != 2:
            raise StemkitError(
                f"band layout segment {list(segment)!r} is not a [width_hz, count] pair"
            )
        width, count = segment
        numbers = all(
            isinstance(value, int | float) and not isinstance(value, bool)
            for value in (width, count)
        )
        if not (numbers and width > 0 and float(count).is_integer() and count > 0):
            raise StemkitError(
                f"band layout segment [{width}, {count}] needs a positive width in Hz and a "
                "positive whole count"
            )
        segments.append((width, int(count)))
    if not segments:
        raise StemkitError("band layout has no segments; give at least one [width_hz, count]")
    return tuple(segments)


def layout_for_source(source: str) -> str:
    """The layout name band-split RNN uses for ``source``: ``joint`` for unknown names."""
    if source in _ALIASES:
        return _ALIASES[source]
    if source in ("bass", "drums"):
        return source
    return "joint"


def band_widths(
    layout: LayoutSpec,
    n_fft: int = 2048,
    sample_rate: int = 44100,
    conversion: str = "floor",
) -> tuple[int, ...]:
    """Number of STFT bins in each band of ``layout``, low to high frequency.

    The widths tile the one-sided spectrum exactly: they are all positive and sum to
    ``nb_bins = n_fft // 2 + 1``. With the defaults, ``band_widths("v7")`` gives 10 bands of 4
    bins, 12 of 11, 8 of 23, 8 of 46, 2 of 92 and a last band of 117 (41 bands).

    Args:
        layout: a layout name or ``[[width_hz, count], ...]`` segments (see
            :func:`resolve_layout`).
        n_fft: FFT size of the STFT.
        sample_rate: sampling rate in Hz.
        conversion: ``"floor"`` (fixed bin count per nominal width) or ``"edges"`` (exact Hz
            boundaries); see the module docstring.

    Raises:
        StemkitError: an unknown layout or conversion, or a layout that does not fit the
            spectrum at this resolution (a band with no bin, or bands above the Nyquist
            frequency).
    """
    segments = resolve_layout(layout)
    if conversion not in CONVERSIONS:
        raise StemkitError(
            f"unknown band conversion {conversion!r}; choose one of {', '.join(CONVERSIONS)}"
        )
    if n_fft <= 0 or sample_rate <= 0:
        raise StemkitError(f"n_fft ({n_fft}) and sample_rate ({sample_rate}) must be positive")
    nb_bins = n_fft // 2 + 1
    widths: list[int] = []
    if conversion == "floor":
        for width_hz, count in segments:
            # Exact rational arithmetic: a float product may land just below an integer.
            bins = math.floor(Fraction(width_hz) * nb_bins / Fraction(sample_rate, 2))
            widths.extend([bins] * count)
        widths.append(nb_bins - sum(widths))
    else:
        starts = [0]
        edge = Fraction(0)
        for width_hz, count in segments:
            for _ in range(count):
                edge += Fraction(width_hz)
                # Bins k with k * sample_rate / n_fft < edge.
                starts.append(min(math.ceil(edge * n_fft / sample_rate), nb_bins))
        starts.append(nb_bins)
        widths = [high - low for low, high in itertools.pairwise(starts)]
    _check_tiling(widths, nb_bins, layout, n_fft, sample_rate, conversion)
    return tuple(widths)


def _check_tiling(
    widths: list[int],
    nb_bins: int,
    layout: LayoutSpec,
    n_fft: int,
    sample_rate: int,
    conversion: str,
) -> None:
    where = f"band layout {layout!r} at n_fft={n_fft}, sample_rate={sample_rate} ({conversion})"
    if sum(widths) != nb_bins or widths[-1] <= 0:
        raise StemkitError(
            f"{where} reaches past the Nyquist frequency ({sample_rate / 2:g} Hz): its bands "
            f"need {sum(widths[:-1])} of the {nb_bins} bins and leave none for the last band; "
            "drop high segments or raise the sample rate"
        )
    empty = [index for index, width in enumerate(widths) if width <= 0]
    if empty:
        raise StemkitError(
            f"{where} gives bands {empty} no frequency bin (bins are "
            f"{sample_rate / n_fft:.1f} Hz wide); raise n_fft or widen the narrow segments"
        )
