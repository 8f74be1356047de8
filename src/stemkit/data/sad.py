"""Source activity detection (SAD) and the SAD-sampled training set of the BSRNN recipe.

The band-split RNN recipe trains on excerpts where each source is active. Each source file of
each training track is cut into windows (6 s every 3 s); a window is split into chunks (10);
the RMS of every chunk and channel is computed, with an all-zero chunk counted as
:data:`ZERO_RMS`. Per channel, the threshold is the ``quantile`` (15 %) of that window's chunk
RMS values, raised to ``floor`` (γ = 1e-3) when lower. The window is kept when, for every
channel, more than ``min_fraction`` (50 %) of its chunks exceed the threshold (strictly).

Consequences worth knowing: a source that is silent for half a window or more is dropped; so
is a window where one channel of a stereo stem is silent; a quiet but steadily active source
is kept as long as its chunks rise above ``floor``; and since the comparison is strict, a
window whose chunks all have exactly the same RMS (a synthetic constant signal) is dropped.
Only full windows are considered: the tail of a track shorter than a window is never used.

The kept windows of every source form a :class:`SadIndex`, built once by reading each source in
blocks of whole windows through ``Track.read`` (:func:`build_sad_index`), so that the WAV layout
(MUSDB18-HQ) and the ``.stem.mp4`` one (MUSDB18) are scanned alike, and cached as JSON with a
fingerprint of the tracks and settings (:meth:`SadIndex.save`, :meth:`SadIndex.load`,
:func:`load_or_build_sad_index`).
:class:`SadDataset` then draws, for every source independently, a kept window, a random crop in
it, a gain uniform in ±10 dB and a silencing with probability 0.1.
"""

from __future__ import annotations

import hashlib
import json
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from itertools import pairwise
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from stemkit import MUSDB_SOURCES
from stemkit.data.musdb import Track, TrackLister, load_split, with_other_sources
from stemkit.data.sampling import EpochAware, item_generator
from stemkit.errors import DatasetError

#: The RMS an all-zero chunk is given, so that it never exceeds a positive threshold.
ZERO_RMS = 1e-5

#: How :class:`SadDataset` silences sources: each one independently, or the item's target only.
SILENCE_MODES = ("all", "target")

#: Below this peak an item is left unnormalised (all sources silenced or silent).
NORMALIZE_MIN_PEAK = 1e-6

#: Seconds of a source read at a time while building the index: long enough that a compressed
#: track (one ffmpeg process per read) is not decoded window by window, short enough to keep
#: memory small (60 s of stereo float32 at 44.1 kHz is 21 MB).
SCAN_BLOCK = 60.0

_FORMAT = "stemkit-sad-index"
_VERSION = 1


@dataclass(frozen=True)
class SadParams:
    """Settings of the activity detector; the defaults are the BSRNN recipe's.

    Attributes:
        window: window length in seconds.
        hop: window hop in seconds, at most ``window``.
        nb_chunks: chunks per window.
        quantile: quantile of the chunk RMS values that sets a channel's threshold, in [0, 1].
        floor: lowest threshold (γ), an RMS on the file's scale (full scale = 1).
        min_fraction: a channel is active when more than this share of chunks exceed the
            threshold, in [0, 1).
    """

    window: float = 6.0
    hop: float = 3.0
    nb_chunks: int = 10
    quantile: float = 0.15
    floor: float = 1e-3
    min_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not self.window > 0 or not 0 < self.hop <= self.window:
            raise ValueError(
                f"SAD needs window > 0 and 0 < hop <= window (seconds); got window={self.window}, "
                f"hop={self.hop}"
            )
        if self.nb_chunks < 1:
            raise ValueError(f"SAD needs nb_chunks >= 1; got {self.nb_chunks}")
        if not 0.0 <= self.quantile <= 1.0:
            raise ValueError(f"SAD quantile must be in [0, 1]; got {self.quantile}")
        if self.floor < 0:
            raise ValueError(f"SAD floor must be >= 0; got {self.floor}")
        if not 0.0 <= self.min_fraction < 1.0:
            raise ValueError(f"SAD min_fraction must be in [0, 1); got {self.min_fraction}")

    def frames(self, rate: int) -> tuple[int, int]:
        """``(window, hop)`` in frames at ``rate`` Hz."""
        window = round(self.window * rate)
        hop = max(1, round(self.hop * rate))
        if window < self.nb_chunks:
            raise ValueError(
                f"a {self.window} s SAD window is {window} frames at {rate} Hz, fewer than its "
                f"{self.nb_chunks} chunks; lengthen the window"
            )
        return window, hop


def window_is_active(window: np.ndarray, params: SadParams | None = None) -> bool:
    """Whether one window of a source counts as active (see the module docstring).

    Args:
        window: ``(nb_channels, nb_frames)``, with ``nb_frames >= params.nb_chunks``; the chunks
            split it into pieces whose lengths differ by at most one frame.
        params: detector settings; the recipe's by default.

    Returns:
        ``True`` when every channel has more than ``min_fraction`` of its chunks above its
        threshold.
    """
    params = params or SadParams()
    if window.ndim != 2 or window.shape[-1] < params.nb_chunks:
        raise ValueError(
            f"window_is_active expects (nb_channels, nb_frames >= {params.nb_chunks}); "
            f"got shape {window.shape}"
        )
    nb_frames = window.shape[-1]
    bounds = np.arange(params.nb_chunks + 1) * nb_frames // params.nb_chunks
    squares = window.astype(np.float64) ** 2
    energy = np.add.reduceat(squares, bounds[:-1], axis=-1)  # (nb_channels, nb_chunks)
    rms = np.sqrt(energy / np.diff(bounds))
    rms[rms == 0.0] = ZERO_RMS
    threshold = np.quantile(rms, params.quantile, axis=-1, keepdims=True)
    threshold = np.maximum(threshold, params.floor)
    fraction = (rms > threshold).mean(axis=-1)
    return bool((fraction > params.min_fraction).all())


def _window_starts(nb_frames: int, window: int, hop: int) -> range:
    return range(0, nb_frames - window + 1, hop)


def active_windows(
    stem: np.ndarray | Tensor,
    rate: int,
    window: float = 6.0,
    hop: float = 3.0,
    nb_chunks: int = 10,
    quantile: float = 0.15,
    floor: float = 1e-3,
    min_fraction: float = 0.5,
) -> list[tuple[int, int]]:
    """The active windows of one source signal held in memory.

    Args:
        stem: ``(nb_channels, time)``.
        rate: sample rate in Hz.
        window: window length in seconds.
        hop: hop between window starts in seconds.
        nb_chunks: chunks per window.
        quantile: quantile of the chunk RMS values giving each channel's threshold.
        floor: lowest threshold (γ).
        min_fraction: share of chunks that must exceed the threshold, in every channel.

    Returns:
        ``(start, end)`` frame pairs of the kept windows (``end - start`` = the window length),
        in order; empty when the signal is shorter than one window.
    """
    params = SadParams(window, hop, nb_chunks, quantile, floor, min_fraction)
    array = stem.detach().cpu().numpy() if isinstance(stem, Tensor) else np.asarray(stem)
    if array.ndim != 2:
        raise ValueError(f"active_windows expects (nb_channels, time); got shape {array.shape}")
    win, step = params.frames(rate)
    return [
        (start, start + win)
        for start in _window_starts(array.shape[-1], win, step)
        if window_is_active(array[:, start : start + win], params)
    ]


def _scan_windows(
    track: Track, source: str, win: int, step: int, block_seconds: float = SCAN_BLOCK
) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, (nb_channels, win))`` for every full window of one source of ``track``.

    The windows are cut from blocks of about ``block_seconds`` read with :meth:`Track.read`, so
    that a compressed track costs one decoder call per block rather than per window, and memory
    stays at one block. Consecutive blocks overlap by ``win - step`` frames (read twice).
    """
    nb_windows = len(_window_starts(track.nb_frames, win, step))
    per_block = max(1, (round(block_seconds * track.sample_rate) - win) // step + 1)
    if nb_windows == 0:
        return
    nb_blocks = -(-nb_windows // per_block)
    # Blocks of nearly equal size: a last block of one window would cost a whole decoder call.
    bounds = [nb_windows * b // nb_blocks for b in range(nb_blocks + 1)]
    for first, stop in pairwise(bounds):
        count = stop - first
        offset = first * step
        block = track.read(source, offset, (count - 1) * step + win)
        for k in range(count):
            yield offset + k * step, block[:, k * step : k * step + win]


def sad_fingerprint(tracks: Sequence[Track], sources: Sequence[str], params: SadParams) -> str:
    """Short sha256 of the tracks (name, length, rate, channels), sources and settings.

    It changes when a track is added, removed or resized, or a setting changes; it does not
    read the audio, so a file edited in place with the same length goes unnoticed.
    """
    items = sorted((t.name, t.nb_frames, t.sample_rate, t.channels) for t in tracks)
    payload = {"tracks": items, "sources": list(sources), "params": asdict(params)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SadIndex:
    """The kept windows of every source over a list of tracks.

    Attributes:
        tracks: the tracks scanned, in the order the rows refer to.
        sources: the sources scanned.
        params: the detector settings used.
        windows: per source, ``(track position, start, end)`` rows, frames of that track.
    """

    tracks: tuple[Track, ...]
    sources: tuple[str, ...]
    params: SadParams
    windows: dict[str, list[tuple[int, int, int]]]

    @property
    def fingerprint(self) -> str:
        """See :func:`sad_fingerprint`."""
        return sad_fingerprint(self.tracks, self.sources, self.params)

    def counts(self) -> dict[str, int]:
        """Number of kept windows per source."""
        return {source: len(self.windows[source]) for source in self.sources}

    def save(self, path: str | PathLike[str]) -> None:
        """Write the index as JSON (atomically: a temporary file, then a rename)."""
        path = Path(path)
        document = {
            "format": _FORMAT,
            "version": _VERSION,
            "fingerprint": self.fingerprint,
            "params": asdict(self.params),
            "sources": list(self.sources),
            "tracks": [
                {
                    "name": t.name,
                    "nb_frames": t.nb_frames,
                    "sample_rate": t.sample_rate,
                    "channels": t.channels,
                }
                for t in self.tracks
            ],
            "windows": {
                source: [[self.tracks[i].name, start, end] for i, start, end in rows]
                for source, rows in self.windows.items()
            },
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(document))
        os.replace(partial, path)

    @classmethod
    def load(cls, path: str | PathLike[str], tracks: Sequence[Track]) -> SadIndex:
        """Read an index saved by :meth:`save` and attach it to ``tracks``.

        Args:
            path: the JSON file.
            tracks: the tracks it was built on (e.g. from :func:`~stemkit.data.musdb.load_split`);
                their folders may have moved since.

        Raises:
            DatasetError: the file is unreadable or not an index, or its fingerprint differs
                from that of ``tracks`` with its settings (rebuild it).
        """
        path = Path(path)
        try:
            document: dict[str, Any] = json.loads(path.read_text())
            if document.get("format") != _FORMAT or document.get("version") != _VERSION:
                raise ValueError(f"not a version-{_VERSION} {_FORMAT} file")
            params = SadParams(**document["params"])
            sources = tuple(document["sources"])
            names = [entry["name"] for entry in document["tracks"]]
            rows = document["windows"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{path}: cannot read this SAD index ({err}); rebuild it") from err
        by_name = {track.name: track for track in tracks}
        ordered = tuple(by_name[name] for name in names if name in by_name)
        if (
            len(ordered) != len(names)
            or len(tracks) != len(names)
            or sad_fingerprint(ordered, sources, params) != document["fingerprint"]
        ):
            raise DatasetError(
                f"{path}: this SAD index was built for other tracks or settings than those "
                "given; delete it, or rebuild it with build_sad_index"
            )
        position = {name: i for i, name in enumerate(names)}
        windows = {
            source: [(position[name], int(start), int(end)) for name, start, end in rows[source]]
            for source in sources
        }
        return cls(ordered, sources, params, windows)


def build_sad_index(
    tracks: Sequence[Track],
    sources: Sequence[str] = MUSDB_SOURCES,
    params: SadParams | None = None,
    progress: bool = False,
    block_seconds: float = SCAN_BLOCK,
) -> SadIndex:
    """Scan the sources of ``tracks`` and keep their active windows.

    Each source is read through :meth:`~stemkit.data.musdb.Track.read` in blocks of about
    ``block_seconds`` (whole windows), so memory stays at one block whatever the number and
    length of the tracks, and a ``.stem.mp4`` track costs one ffmpeg call per block. The result
    does not depend on ``block_seconds``.

    Args:
        tracks: tracks from :func:`~stemkit.data.musdb.list_tracks`,
            :func:`~stemkit.data.stems_mp4.list_stem_tracks` or ``load_split``; each must hold
            every source.
        sources: the sources to scan.
        params: detector settings; the recipe's by default.
        progress: show a progress bar over the (track, source) pairs.
        block_seconds: seconds read at a time; at least one window is always read.

    Returns:
        The index; see :class:`SadIndex`.

    Raises:
        DatasetError: a file cannot be read.
    """
    params = params or SadParams()
    windows: dict[str, list[tuple[int, int, int]]] = {source: [] for source in sources}
    jobs = [(source, i) for source in sources for i in range(len(tracks))]
    for source, i in tqdm(jobs, desc="source activity", disable=not progress):
        track = tracks[i]
        win, step = params.frames(track.sample_rate)
        for start, window in _scan_windows(track, source, win, step, block_seconds):
            if window_is_active(window, params):
                windows[source].append((i, start, start + win))
    return SadIndex(tuple(tracks), tuple(sources), params, windows)


def load_or_build_sad_index(
    path: str | PathLike[str],
    tracks: Sequence[Track],
    sources: Sequence[str] = MUSDB_SOURCES,
    params: SadParams | None = None,
    progress: bool = False,
) -> SadIndex:
    """The cached index at ``path`` when it matches ``tracks``, ``sources`` and ``params``;
    otherwise a fresh one, built with :func:`build_sad_index` and saved there."""
    params = params or SadParams()
    path = Path(path)
    if path.is_file():
        try:
            index = SadIndex.load(path, tracks)
        except DatasetError:
            index = None
        if index is not None and index.fingerprint == sad_fingerprint(tracks, sources, params):
            return index
    index = build_sad_index(tracks, sources, params, progress)
    index.save(path)
    return index


class SadDataset(EpochAware, Dataset[tuple[Tensor, str]]):
    """Training excerpts drawn from the active windows of each source (the BSRNN recipe).

    Item ``index``: for every source independently, a kept window drawn uniformly from that
    source's windows (so the sources usually come from different tracks), a crop of
    ``segment`` seconds at a uniform offset inside it, a gain uniform in ``±gain_db`` dB, and
    silencing with probability ``silence_p``: of every source independently with
    ``silence="all"`` (the recipe), or with ``silence="target"`` of the item's target only (the
    replication's "silent target" row). There each item has one target, the targets taking
    turns (item ``index`` has target ``index % nb_targets``), as if the replication's
    per-target training sets, where only the target is ever silenced, were interleaved; the
    other sources of the item are never silenced. With ``normalize`` (the recipe's choice), the
    stems are then divided by ``max(max|mixture|, max|stems|)``, the mixture being their sum,
    unless that peak is below :data:`NORMALIZE_MIN_PEAK`; dividing the stems divides the
    mixture the trainer sums from them by the same factor. The randomness of an item derives
    from ``(seed, epoch, index)`` only, as in :class:`~stemkit.data.musdb.MusdbHQ`.

    Args:
        index: the kept windows (see :func:`build_sad_index`).
        segment: excerpt length in seconds, at most the SAD window.
        nb_items: items per epoch (the recipe draws 20000).
        gain_db: half-width of the uniform gain range in dB, or ``None`` for no gain.
        silence_p: probability that a source is replaced by zeros.
        silence: ``"all"`` or ``"target"`` (see above).
        nb_targets: how many of the index's sources, first in order, are targets (the rest
            are the other stems of the tracks); ``None``: all of them.
        normalize: apply the peak normalisation described above.
        seed: seed of the draws.

    Attributes:
        sources: the source names, in item order.
        stem_sources: the same (every source the index covers is a row of an item).
        sample_rate: rate in Hz shared by all tracks.
        nb_channels: channel count shared by all tracks.
        segment_frames: excerpt length in frames.

    Items are ``(stems, name)``: stems ``(nb_sources, nb_channels, segment_frames)`` float32, and
    ``"vocals=<track>@<start> | drums=<track>@<start> | ..."`` (start frame of each crop).
    """

    def __init__(
        self,
        index: SadIndex,
        segment: float = 3.0,
        nb_items: int = 20000,
        gain_db: float | None = 10.0,
        silence_p: float = 0.1,
        normalize: bool = True,
        seed: int = 42,
        silence: str = "all",
        nb_targets: int | None = None,
    ) -> None:
        if not index.tracks:
            raise DatasetError("the SAD index holds no tracks")
        first = index.tracks[0]
        for track in index.tracks[1:]:
            if (track.sample_rate, track.channels) != (first.sample_rate, first.channels):
                raise DatasetError(
                    f"{track.folder}: {track.sample_rate} Hz, {track.channels} channel(s), but "
                    f"'{first.name}' has {first.sample_rate} Hz, {first.channels} channel(s); all "
                    "tracks must share rate and channel count (resample them)"
                )
        empty = [source for source, count in index.counts().items() if count == 0]
        if empty:
            raise DatasetError(
                f"no active window for source(s) {', '.join(empty)} in {len(index.tracks)} "
                f"track(s); check those stems, add tracks, or lower the SAD floor "
                f"({index.params.floor})"
            )
        if not segment > 0:
            raise DatasetError(f"segment must be a positive number of seconds; got {segment}")
        if nb_items < 1:
            raise DatasetError(f"nb_items must be at least 1; got {nb_items}")
        if gain_db is not None and gain_db < 0:
            raise DatasetError(f"gain_db must be >= 0 (a half-width in dB); got {gain_db}")
        if not 0.0 <= silence_p <= 1.0:
            raise DatasetError(f"silence_p must be in [0, 1]; got {silence_p}")
        if silence not in SILENCE_MODES:
            raise DatasetError(
                f"silence must be one of {', '.join(SILENCE_MODES)}; got {silence!r}"
            )
        nb_targets = len(index.sources) if nb_targets is None else nb_targets
        if not 1 <= nb_targets <= len(index.sources):
            raise DatasetError(
                f"nb_targets must be between 1 and the {len(index.sources)} indexed sources; got "
                f"{nb_targets}"
            )
        if seed < 0:
            raise DatasetError(f"seed must be a non-negative integer; got {seed}")
        self.index = index
        self.sources = index.sources
        self.stem_sources = index.sources
        self.sample_rate = first.sample_rate
        self.nb_channels = first.channels
        self.segment_frames = max(1, round(segment * self.sample_rate))
        window_frames = index.params.frames(self.sample_rate)[0]
        if self.segment_frames > window_frames:
            raise DatasetError(
                f"segment {segment} s is longer than the {index.params.window} s SAD windows it "
                "is cropped from; shorten it or rebuild the index with longer windows"
            )
        self.nb_items = int(nb_items)
        self.gain_db = None if gain_db is None else float(gain_db)
        self.silence_p = float(silence_p)
        self.silence = silence
        self.nb_targets = nb_targets
        self.normalize = normalize
        self.seed = int(seed)
        self._init_epoch()

    @classmethod
    def from_root(
        cls,
        root: str | PathLike[str],
        split: str = "train",
        sources: Sequence[str] = MUSDB_SOURCES,
        index_path: str | PathLike[str] | None = None,
        params: SadParams | None = None,
        valid_fraction: float = 0.15,
        split_seed: int = 42,
        progress: bool = False,
        lister: TrackLister | None = None,
        **options: Any,
    ) -> SadDataset:
        """A dataset over ``split`` of a MUSDB18-HQ-layout (or, with ``lister``, other) folder.

        Args:
            root: the dataset root.
            split: see :func:`~stemkit.data.musdb.split_tracks`.
            sources: the target sources, first in item order; the other stems every track
                holds follow them.
            index_path: JSON cache of the index (reused when it matches, rebuilt otherwise);
                ``None`` builds it in memory every time.
            params: detector settings; the recipe's by default.
            valid_fraction: see :func:`~stemkit.data.musdb.split_tracks`.
            split_seed: see :func:`~stemkit.data.musdb.split_tracks`.
            progress: show a progress bar while building the index.
            lister: lists the tracks of a subset; :func:`~stemkit.data.musdb.list_tracks` (WAV)
                by default, ``MusdbStems.list_tracks`` for a MUSDB18 ``.stem.mp4`` folder.
            **options: the other arguments of :class:`SadDataset`.
        """
        tracks = load_split(root, split, sources, valid_fraction, split_seed, lister)
        # The index covers every stem of the tracks, not only the targets: the mixture summed
        # from an item must be the whole song (see MusdbHQ.stem_sources).
        everything = with_other_sources(sources, tracks)
        if everything != tuple(sources):
            sources = everything
            tracks = load_split(root, split, sources, valid_fraction, split_seed, lister)
        if index_path is None:
            index = build_sad_index(tracks, sources, params, progress)
        else:
            index = load_or_build_sad_index(index_path, tracks, sources, params, progress)
        return cls(index, **options)

    def __len__(self) -> int:
        return self.nb_items

    def fingerprint(self) -> str:
        """The index fingerprint, for provenance."""
        return self.index.fingerprint

    def __getitem__(self, index: int) -> tuple[Tensor, str]:
        """Item ``index``: stems ``(nb_sources, nb_channels, segment_frames)`` and a name."""
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        generator = item_generator(self.seed, self.epoch, index)
        nb_sources = len(self.sources)
        stems = np.zeros((nb_sources, self.nb_channels, self.segment_frames), dtype=np.float32)
        names = []
        for row, source in enumerate(self.sources):
            rows = self.index.windows[source]
            pick = int(torch.randint(len(rows), (1,), generator=generator))
            track_position, start, end = rows[pick]
            room = end - start - self.segment_frames
            offset = int(torch.randint(room + 1, (1,), generator=generator))
            track = self.index.tracks[track_position]
            stems[row] = track.read(source, start + offset, self.segment_frames)
            names.append(f"{source}={track.name}@{start + offset}")
        out = torch.from_numpy(stems)
        # Both draws are made whatever the settings, so that an item's crops and gains stay the
        # same when silencing or the gain is switched off.
        uniform = torch.rand(nb_sources, generator=generator, dtype=torch.float64)
        silenced = torch.rand(nb_sources, generator=generator) < self.silence_p
        if self.silence == "target":
            target = index % self.nb_targets
            silenced[:target] = False
            silenced[target + 1 :] = False
        if self.gain_db is not None:
            gains = 10.0 ** ((2.0 * uniform - 1.0) * self.gain_db / 20.0)
            out = out * gains.to(out.dtype)[:, None, None]
        out[silenced] = 0.0
        if self.normalize:
            peak = torch.maximum(out.sum(dim=0).abs().max(), out.abs().max())
            if peak >= NORMALIZE_MIN_PEAK:
                out = out / peak
        return out, " | ".join(names)

    def __repr__(self) -> str:
        return (
            f"SadDataset(tracks={len(self.index.tracks)}, sources={self.sources}, "
            f"windows={self.index.counts()}, {self.segment_frames} frames x {self.nb_items})"
        )
