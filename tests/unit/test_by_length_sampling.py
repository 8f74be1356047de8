"""``by_length``: excerpts uniform over every (track, start) pair, not over tracks."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import toy_stems, write_hq_track
from stemkit.data.musdb import MusdbHQ

RATE = 8000


@pytest.fixture(scope="module")
def uneven_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tracks of 1 s and 4 s at 8 kHz (the test split: every track)."""
    root = tmp_path_factory.mktemp("uneven")
    write_hq_track(root / "test" / "Short", toy_stems(1.0, seed=0, rate=RATE), rate=RATE)
    write_hq_track(root / "test" / "Long", toy_stems(4.0, seed=1, rate=RATE), rate=RATE)
    return root


@pytest.mark.parametrize("random_mix", [False, True])
def test_tracks_are_drawn_in_proportion_to_their_excerpt_starts(
    uneven_tree: Path, random_mix: bool
) -> None:
    options = dict(segment=0.5, samples_per_track=600, random_mix=random_mix)
    fair = MusdbHQ(uneven_tree, "test", by_length=True, **options)  # type: ignore[arg-type]
    plain = MusdbHQ(uneven_tree, "test", **options)  # type: ignore[arg-type]
    # excerpt starts: 1 s track 4001, 4 s track 28001: the long one holds 7/8 of them
    share = 28001 / (28001 + 4001)
    counts = {"Short": 0, "Long": 0}
    starts: list[int] = []
    for index in range(len(fair)):
        for excerpt in fair.excerpts(index):
            counts[excerpt.track.name] += 1
            if excerpt.track.name == "Long":
                starts.append(excerpt.start)
    total = sum(counts.values())
    # 1200 items (x4 sources with random mix): the binomial standard deviation is under 1 %
    assert counts["Long"] / total == pytest.approx(share, abs=0.04)
    # within the long track, starts spread over all of it (uniform: mean near the middle)
    assert sum(starts) / len(starts) == pytest.approx(28000 / 2, rel=0.1)
    plain_long = sum(e.track.name == "Long" for i in range(len(plain)) for e in plain.excerpts(i))
    assert plain_long / total == pytest.approx(0.5, abs=0.05)


def test_drawing_by_length_is_reproducible_and_keeps_one_track_per_item(
    uneven_tree: Path,
) -> None:
    options = dict(segment=0.5, samples_per_track=4, random_mix=False)
    a = MusdbHQ(uneven_tree, "test", by_length=True, seed=3, **options)  # type: ignore[arg-type]
    b = MusdbHQ(uneven_tree, "test", by_length=True, seed=3, **options)  # type: ignore[arg-type]
    for index in range(len(a)):
        plan = a.excerpts(index)
        assert plan == b.excerpts(index)
        assert len({(e.track.name, e.start) for e in plan}) == 1  # a real excerpt of one song
    a.set_epoch(1)
    assert [a.excerpts(i) for i in range(len(a))] != [b.excerpts(i) for i in range(len(b))]
