"""Band-split layouts: the replication's floored widths, exact-edge widths, tiling, errors."""

from __future__ import annotations

import pytest

from stemkit.dsp.bands import LAYOUTS, band_widths, layout_for_source, resolve_layout
from stemkit.errors import StemkitError


def _runs(*pairs: tuple[int, int]) -> tuple[int, ...]:
    return tuple(width for count, width in pairs for _ in range(count))


# spec-notes §4.2, widths at n_fft 2048 / 44.1 kHz with the "floor" conversion
FLOOR_WIDTHS = {
    "v7": _runs((10, 4), (12, 11), (8, 23), (8, 46), (2, 92), (1, 117)),
    "bass": _runs((10, 2), (5, 4), (6, 23), (4, 46), (4, 92), (1, 295)),
    "drums": _runs((20, 2), (10, 4), (8, 11), (8, 23), (8, 46), (1, 305)),
    "joint": _runs((20, 2), (10, 4), (8, 11), (8, 23), (8, 46), (2, 92), (1, 121)),
}
BAND_COUNTS = {"v7": 41, "bass": 30, "drums": 55, "joint": 57}


@pytest.mark.parametrize("name", sorted(FLOOR_WIDTHS))
def test_floor_widths_equal_the_replication(name: str) -> None:
    widths = band_widths(name)
    assert widths == FLOOR_WIDTHS[name]
    assert len(widths) == BAND_COUNTS[name]
    assert sum(widths) == 1025


def test_source_aliases_and_auto_layouts() -> None:
    assert band_widths("vocals") == band_widths("other") == FLOOR_WIDTHS["v7"]
    assert [layout_for_source(s) for s in ("vocals", "other", "bass", "drums", "piano")] == [
        "v7",
        "v7",
        "bass",
        "drums",
        "joint",
    ]


def test_edges_put_band_boundaries_at_the_nominal_frequencies() -> None:
    n_fft, rate = 2048, 44100
    widths = band_widths("v7", n_fft, rate, conversion="edges")
    assert len(widths) == 41 and sum(widths) == n_fft // 2 + 1
    # each boundary is the first bin whose centre frequency reaches the nominal edge
    edges_hz = [100 * i for i in range(1, 11)] + [1000 + 250 * i for i in range(1, 13)]
    edges_hz += [4000 + 500 * i for i in range(1, 9)] + [8000 + 1000 * i for i in range(1, 9)]
    edges_hz += [18000, 20000]
    start = 0
    for width, edge in zip(widths[:-1], edges_hz, strict=True):
        start += width
        assert (start - 1) * rate / n_fft < edge <= start * rate / n_fft
    assert widths[:3] == (5, 5, 4)  # 21.5 Hz bins: 0–86, 108–194, 215–280 Hz
    assert widths[-1] == 1025 - 929  # 20 kHz lies between bins 928 and 929


@pytest.mark.parametrize("conversion", ["floor", "edges"])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
@pytest.mark.parametrize(("n_fft", "rate"), [(2048, 44100), (4096, 44100), (4096, 48000)])
def test_widths_tile_the_spectrum(conversion: str, name: str, n_fft: int, rate: int) -> None:
    widths = band_widths(name, n_fft, rate, conversion)
    assert sum(widths) == n_fft // 2 + 1
    assert min(widths) > 0
    assert len(widths) == BAND_COUNTS[name]


def test_explicit_segments() -> None:
    # two 1 kHz bands then the rest: floor(1000 · 513 / 11025) = 46 bins each
    assert band_widths([[1000, 2]], n_fft=1024, sample_rate=22050) == (46, 46, 513 - 92)
    assert resolve_layout([[50, 3], [100.5, 2]]) == ((50, 3), (100.5, 2))


def test_floor_is_exact_when_the_product_is_an_integer() -> None:
    # 4410 Hz · 1025 / 22050 is exactly 205: a float product could floor to 204
    assert band_widths([[4410, 1]]) == (205, 820)


def test_too_coarse_resolution_is_rejected() -> None:
    with pytest.raises(StemkitError, match=r"no frequency bin.*raise n_fft"):
        band_widths("drums", n_fft=512)  # 50 Hz bands, 86 Hz bins


def test_layout_past_nyquist_is_rejected() -> None:
    with pytest.raises(StemkitError, match="Nyquist"):
        band_widths("v7", sample_rate=32000)  # v7 reaches 20 kHz > 16 kHz
    with pytest.raises(StemkitError, match="Nyquist"):
        band_widths("v7", sample_rate=32000, conversion="edges")


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("v8", "unknown band layout 'v8'"),
        ([[100, 0]], "positive whole count"),
        ([[-5, 2]], "positive width"),
        ([[100, 2.5]], "positive whole count"),
        ([[100]], "not a \\[width_hz, count\\] pair"),
        ([["100", 2]], "positive width"),
        ([], "no segments"),
    ],
)
def test_bad_layouts_are_named(layout: object, message: str) -> None:
    with pytest.raises(StemkitError, match=message):
        band_widths(layout)  # type: ignore[arg-type]


def test_unknown_conversion() -> None:
    with pytest.raises(StemkitError, match="unknown band conversion 'round'"):
        band_widths("v7", conversion="round")
