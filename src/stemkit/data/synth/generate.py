"""Write a synthetic MUSDB18-HQ-style dataset: compose, render, mix exactly, write atomically.

Layout: ``OUT/train/<track>/`` and ``OUT/test/<track>/``, each with ``mixture.wav``,
``drums.wav``, ``bass.wav``, ``other.wav``, ``vocals.wav`` (44.1 kHz, stereo, PCM_16),
``song.mid`` (the notes), ``settings.json`` (the song's soundfonts, effect settings and seed)
and ``meta.json`` (everything needed to reproduce the track).

Each song draws its soundfont (or one per part) from the training soundfonts and, with
production on, its effect settings from the training ranges; ``heldout=True`` makes songs
(all in ``test/``, named ``stemkit synth heldout - NNNNN``) with the reserved soundfont and the
held-out effect ranges, which training songs never use (:mod:`.soundfonts`, :mod:`.production`).

The mixture is exactly the sum of the stems in the decoded int16 samples: the bus compressor
and limiter act on every stem with the same gain curve, all stems are then scaled by one
common gain (mixture and stem peaks at or below -1 dBFS, so nothing clips), rounded to int16
one by one, and the mixture is written as their integer sum.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import numpy as np

from stemkit.data.synth import production as prod
from stemkit.data.synth import soundfonts as sfs
from stemkit.data.synth.compose import (
    MIN_DURATION,
    PART_STEMS,
    PROGRAM_POOLS,
    SAMPLE_RATE,
    STEMS,
    Song,
    compose,
)
from stemkit.data.synth.render import (
    SYNTH_SETTINGS,
    describe_voice,
    fluidsynth_version,
    lr_correlation,
    prepare_song,
    render_stem,
    resolve_voice,
    sha256_file,
    usable_programs,
    voice_engine,
)
from stemkit.errors import DatasetError, StemkitError

#: Bumped whenever a change alters the audio or meta produced for a given seed.
GENERATOR_VERSION = "2.1"
#: How songs pick soundfonts: one per song, or one per part.
SOUNDFONT_MODES: tuple[str, ...] = ("song", "part")
#: Peak of the mixture and of every stem, in dBFS.
PEAK_DBFS = -1.0
#: int16 full scale as soundfile decodes it (sample / 32768).
_FULL_SCALE = 32768
#: The int16 peak the common gain aims at: -1 dBFS, less the worst rounding of a 4-stem sum.
_TARGET_PEAK = int(np.floor(_FULL_SCALE * 10 ** (PEAK_DBFS / 20))) - len(STEMS)
#: RMS threshold of an active 1 s window, in dBFS.
ACTIVE_DBFS = -50.0
#: Longest song the generator writes, in seconds (20 minutes). A track is composed, rendered
#: and mixed in memory as a whole, so its length bounds the memory a rendering process needs;
#: 20 minutes is longer than almost any real song and still fits a few GB.
MAX_DURATION = 1200.0
#: Most tracks in one dataset: track folders are numbered with five digits
#: (:func:`track_name`), which keeps their names sorting in index order.
MAX_TRACKS = 100_000
#: Peak memory one rendering process needs per second of song, in bytes: four float32 stereo
#: stems, their gained copies, a float64 mixture, the int16/int32 results and the statistics'
#: temporaries, and the production chain's processed copies. Measured at about 5 MB/s without
#: production (peak RSS of a 60 s track less a 2 s one); production adds about half of that.
MEMORY_PER_SECOND = 192 * SAMPLE_RATE
#: Bytes a track takes on disk per second: five stereo PCM_16 WAV files (MIDI and JSON are tiny).
DISK_PER_SECOND = (1 + len(STEMS)) * 2 * 2 * SAMPLE_RATE
#: The files of every track folder.
TRACK_FILES: tuple[str, ...] = (
    "mixture.wav",
    *(f"{stem}.wav" for stem in STEMS),
    "song.mid",
    "settings.json",
    "meta.json",
)


def track_seed(seed: int, index: int, heldout: bool = False) -> int:
    """The seed of track ``index`` of a dataset seeded with ``seed`` (independent of N).

    Held-out tracks draw from their own seed stream: never the same song as a training track.
    """
    key = (index, 1) if heldout else (index,)
    state = np.random.SeedSequence(seed, spawn_key=key).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def track_name(index: int, heldout: bool = False) -> str:
    """Folder name of track ``index``, in MUSDB's ``Artist - Title`` form."""
    return f"stemkit synth {'heldout ' if heldout else ''}- {index:05d}"


@dataclass(frozen=True)
class FontInfo:
    """A soundfont a job may use, with its hash and the programs that passed screening."""

    name: str
    path: Path
    sha256: str
    allowed_programs: frozenset[int]


@dataclass(frozen=True)
class TrackJob:
    """Everything a worker needs to write one track (picklable).

    Attributes:
        folder: the final track folder (``OUT/<split>/<name>``).
        seed: dataset seed.
        index: track index.
        duration: seconds.
        fonts: the soundfonts the song draws from (in a fixed order).
        fluidsynth_version: recorded in meta.json.
        soundfont_mode: ``song`` (one soundfont per song) or ``part`` (one per part).
        production: run the mix production (effects, bus compression, limiter).
        heldout: a held-out song (reserved soundfont, held-out effect ranges).
        voice: ``sung`` or ``synth``, how the vocals are rendered.
        voice_engine: what renders them and its versions, recorded in meta.json.
    """

    folder: Path
    seed: int
    index: int
    duration: float
    fonts: tuple[FontInfo, ...]
    fluidsynth_version: str
    soundfont_mode: str = "song"
    production: bool = True
    heldout: bool = False
    voice: str = "synth"
    voice_engine: str = "fluidsynth"


def synthesize(
    out: str | os.PathLike[str],
    n_tracks: int,
    duration: float,
    seed: int,
    *,
    soundfont: str | os.PathLike[str] | None = None,
    soundfonts: str | Sequence[str | os.PathLike[str]] | None = None,
    soundfont_mode: str = "song",
    production: bool = True,
    heldout: bool = False,
    heldout_soundfont: str | None = None,
    n_test: int | None = None,
    workers: int = 1,
    progress: bool = False,
    voice: str | None = None,
) -> list[Path]:
    """Generate a synthetic 4-stem dataset in the MUSDB18-HQ layout.

    Track ``i`` depends only on (``seed``, ``i``, ``duration``, the soundfonts, the options
    below, the FluidSynth version and :data:`GENERATOR_VERSION`), not on ``n_tracks`` or
    ``workers``. Tracks that
    already exist with the same settings are kept; each new track is written to a hidden
    sibling folder and renamed when complete, so a folder under ``train/`` or ``test/`` is
    always a whole track.

    Args:
        out: dataset root; created if missing.
        n_tracks: number of tracks N (at most :data:`MAX_TRACKS`).
        duration: length of each track in seconds (at least 2, at most :data:`MAX_DURATION`).
        seed: dataset seed.
        soundfont: one General MIDI ``.sf2``/``.sf3`` file (the same as ``soundfonts=[file]``).
        soundfonts: ``"all"`` (default: every installed General MIDI soundfont), or names
            (see :func:`.soundfonts.discover`) and paths, as a list or comma-separated. With
            two or more, one is reserved for held-out songs (:func:`.soundfonts.split_pool`).
        soundfont_mode: ``"song"`` (each song draws one soundfont) or ``"part"`` (each part).
        production: per-stem effects, bus compression and limiter (default on).
        heldout: make held-out songs: the reserved soundfont, the held-out effect ranges, all
            in ``test/``.
        heldout_soundfont: the soundfont to reserve (a name); default by preference.
        n_test: tracks put in ``test/`` (the last indices); default ``max(1, round(0.2 N))``
            (all of them with ``heldout``).
        workers: processes rendering in parallel; the output does not depend on it.
        progress: show a progress bar on stderr.
        voice: ``"sung"`` (espeak-ng and Praat) or ``"synth"`` (a FluidSynth voice preset)
            vocals; default sung where espeak-ng and parselmouth are installed.

    Returns:
        The track folders, in index order.

    Raises:
        StemkitError: on bad arguments, songs too long for the available memory, tracks too
            many for the free disk space, a missing FluidSynth library or an unusable soundfont
            (all before anything is written).
        DatasetError: if a track folder already exists with different settings.
    """
    # Absolute paths: workers may run in another working directory.
    root = Path(out).expanduser().absolute()
    if heldout and n_test not in (None, n_tracks):
        raise StemkitError("--heldout puts every track in test/; leave out --test-tracks")
    n_test = _check_arguments(
        n_tracks, duration, seed, n_test if not heldout else n_tracks, workers
    )
    if soundfont_mode not in SOUNDFONT_MODES:
        raise StemkitError(
            f"--soundfont-mode must be one of {', '.join(SOUNDFONT_MODES)}, got {soundfont_mode!r}"
        )
    _check_memory(duration, min(workers, n_tracks))
    if soundfont is not None and soundfonts is not None:
        raise StemkitError("give either --soundfont or --soundfonts, not both")
    fonts = select_soundfonts(
        [soundfont] if soundfont is not None else soundfonts, heldout, heldout_soundfont
    )
    version = fluidsynth_version()
    voice = resolve_voice(voice)
    engine = voice_engine(voice)

    jobs: list[TrackJob] = []
    for index in range(n_tracks):
        split = "test" if index >= n_tracks - n_test else "train"
        folder = root / split / track_name(index, heldout)
        job = TrackJob(
            folder,
            seed,
            index,
            float(duration),
            fonts,
            version,
            soundfont_mode=soundfont_mode,
            production=production,
            heldout=heldout,
            voice=voice,
            voice_engine=engine,
        )
        jobs.append(job)
    todo = [job for job in jobs if not _is_done(job)]
    _check_disk(root, len(todo), duration)

    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for job in todo:  # leftovers of an interrupted run
        for stale in job.folder.parent.glob(f".{job.folder.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)
    bar = _progress_bar(len(jobs), len(jobs) - len(todo), progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for job in todo:
                write_track(job)
                bar.update(1)
        else:
            _run_pool(todo, workers, bar)
    finally:
        bar.close()
    return [job.folder for job in jobs]


def select_soundfonts(
    spec: str | Sequence[str | os.PathLike[str]] | None,
    heldout: bool = False,
    heldout_soundfont: str | None = None,
) -> tuple[FontInfo, ...]:
    """The soundfonts of a training (or held-out) dataset, hashed and screened.

    Raises:
        StemkitError: on an unknown or unusable soundfont, or ``heldout`` with a single one.
    """
    pool = sfs.resolve(spec)
    training, reserved = sfs.split_pool(pool, heldout_soundfont)
    if heldout and reserved is None:
        raise StemkitError(
            f"--heldout needs a soundfont that training does not use, but only "
            f"{pool[0].name} is selected: install another General MIDI soundfont "
            "(Debian: fluid-soundfont-gm, musescore-general-soundfont) or select two or more "
            "with --soundfonts"
        )
    chosen = (reserved,) if heldout and reserved is not None else training
    pool_programs = [p for pool in PROGRAM_POOLS.values() for p in pool]
    infos = []
    for font in chosen:
        digest = sha256_file(font.path)
        allowed = frozenset(usable_programs(font.path, pool_programs, digest))
        infos.append(FontInfo(font.name, font.path, digest, allowed))
    return tuple(infos)


def _check_arguments(
    n_tracks: int, duration: float, seed: int, n_test: int | None, workers: int
) -> int:
    if seed < 0:
        raise StemkitError(f"--seed must be a non-negative integer, got {seed}")
    if not 1 <= n_tracks <= MAX_TRACKS:
        raise StemkitError(
            f"--tracks must be between 1 and {MAX_TRACKS:,} (track folders are numbered with "
            f"five digits), got {n_tracks}"
        )
    # `not >=` also refuses NaN, which every comparison fails.
    if not duration >= MIN_DURATION:
        raise StemkitError(f"--duration must be at least {MIN_DURATION:g} s, got {duration}")
    if not duration <= MAX_DURATION:
        raise StemkitError(
            f"--duration must be at most {MAX_DURATION:g} s ({MAX_DURATION / 60:g} minutes: a "
            f"song is rendered whole in memory), got {duration}"
        )
    if workers < 1:
        raise StemkitError(f"--workers must be at least 1, got {workers}")
    if n_test is None:
        n_test = max(1, round(0.2 * n_tracks))
    if not 0 <= n_test <= n_tracks:
        raise StemkitError(f"--test-tracks must be between 0 and {n_tracks}, got {n_test}")
    return n_test


def _check_memory(duration: float, concurrent: int) -> None:
    """Refuse songs whose rendering would not fit the memory available now.

    Args:
        duration: seconds per song.
        concurrent: songs rendered at the same time (one per worker process).
    """
    needed = math.ceil(duration * MEMORY_PER_SECOND) * concurrent
    available = available_memory()
    if available is not None and needed > available:
        per_song = duration * MEMORY_PER_SECOND
        raise StemkitError(
            f"--duration {duration:g} s with {concurrent} worker(s) needs about "
            f"{_gb(needed)} of memory ({_gb(per_song)} per song being rendered) but only "
            f"{_gb(available)} is available; give a shorter --duration or fewer --workers"
        )


def _check_disk(root: Path, n_tracks: int, duration: float) -> None:
    """Refuse to start writing tracks that would not fit the free space under ``root``."""
    if n_tracks == 0:
        return
    needed = math.ceil(n_tracks * duration * DISK_PER_SECOND)
    existing = root
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        free = shutil.disk_usage(existing).free
    except OSError:  # an unreadable mount: the writes themselves will say what is wrong
        return
    if needed > free:
        raise StemkitError(
            f"{root}: {n_tracks} tracks of {duration:g} s need about {_gb(needed)} of disk "
            f"but only {_gb(free)} is free there; give fewer --tracks, a shorter --duration "
            "or another folder"
        )


def available_memory() -> int | None:
    """Bytes of memory this process can still take, or None where it cannot be told.

    The smaller of the kernel's ``MemAvailable`` and the room left under a cgroup (v2) memory
    limit, since a container's limit is what ends the process, not the machine's memory.
    """
    candidates: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit = (cgroup / "memory.max").read_text().strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text().strip())
            # The page cache counts as used but is given back on demand.
            for line in (cgroup / "memory.stat").read_text().splitlines():
                if line.startswith("inactive_file "):
                    used -= int(line.split()[1])
            candidates.append(max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return min(candidates) if candidates else None


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB"


def _is_done(job: TrackJob) -> bool:
    """True if the track exists with the same settings; raises if it exists with others."""
    others = [job.folder.parent.parent / s / job.folder.name for s in ("train", "test")]
    existing = [folder for folder in others if folder.exists()]
    if not existing:
        return False
    folder = existing[0]
    expected = _identity(job)
    try:
        found = json.loads((folder / "meta.json").read_text())
        same = folder == job.folder and {k: found.get(k) for k in expected} == expected
    except (OSError, ValueError):
        same = False
    if not same or not all((folder / name).is_file() for name in TRACK_FILES):
        raise DatasetError(
            f"{folder} already exists but was made with other settings (seed, duration, "
            "soundfonts, production, split or generator version); choose a new output folder "
            "or delete it"
        )
    return True


def _identity(job: TrackJob) -> dict[str, Any]:
    """The meta entries that must match for an existing track to be reused."""
    return {
        "generator_version": GENERATOR_VERSION,
        "seed": job.seed,
        "index": job.index,
        "duration_s": job.duration,
        "soundfont_pool": [{"name": f.name, "sha256": f.sha256} for f in job.fonts],
        "soundfont_mode": job.soundfont_mode,
        "production": job.production,
        "heldout": job.heldout,
        "fluidsynth_version": job.fluidsynth_version,
        "voice": {"kind": job.voice, "engine": job.voice_engine},
    }


def _progress_bar(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="track", desc="synth", disable=not enabled)


def _run_pool(jobs: Sequence[TrackJob], workers: int, bar: Any) -> None:
    with ProcessPoolExecutor(max_workers=workers, mp_context=_mp_context()) as pool:
        pending: set[Future[Path]] = {pool.submit(write_track, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                bar.update(1)


def _mp_context() -> BaseContext:
    """The start method of the worker processes.

    Never plain fork, which copies the parent's threads (torch, tqdm) in whatever state they
    are. A fork server that has imported this module once forks clean workers in
    milliseconds, where spawn would re-import everything in every worker.
    """
    if "forkserver" not in get_all_start_methods():
        return get_context("spawn")
    context = get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


def _render(song: Song, fonts: dict[str, FontInfo], voice: str) -> dict[str, np.ndarray]:
    """Render every stem; parts of one stem on different soundfonts are rendered apart."""
    floats: dict[str, np.ndarray] = {}
    for stem in STEMS:
        groups: dict[Path, list[Any]] = {}
        for part in song.stem_parts(stem):
            groups.setdefault(fonts[part.name].path, []).append(part)
        renders = [
            render_stem(
                song if len(groups) == 1 else replace(song, parts=tuple(parts)), stem, path, voice
            )
            for path, parts in groups.items()
        ]
        floats[stem] = renders[0] if len(renders) == 1 else np.sum(renders, axis=0)
    return floats


def write_track(job: TrackJob) -> Path:
    """Compose, render, produce, mix and write one track folder atomically; returns it."""
    seed = track_seed(job.seed, job.index, job.heldout)
    drawn = sfs.choose(job.fonts, seed, tuple(PART_STEMS) if job.soundfont_mode == "part" else None)
    fonts = {part: drawn[part] if part in drawn else drawn["song"] for part in PART_STEMS}
    allowed = frozenset.intersection(*(font.allowed_programs for font in fonts.values()))
    song = prepare_song(compose(seed, job.duration, allowed_programs=allowed), job.voice)
    floats = _render(song, fonts, job.voice)
    effects: dict[str, dict[str, float]] | None = None
    bus_report: dict[str, float] = {}
    if job.production:
        effects = prod.draw_settings(seed, "heldout" if job.heldout else "train")
        floats, bus_report = prod.produce(song, floats, effects)
        # the effects ring on into each rest before it is gated again: meta.json says where
        # the stems are exactly silent
        song = replace(
            song,
            silent_spans={
                stem: tuple(prod.tail_spans(spans, song.sample_rate))
                for stem, spans in song.silent_spans.items()
            },
        )
        stems, mixture, common_gain = mix_exact(floats, {stem: 0.0 for stem in STEMS})
    else:
        stems, mixture, common_gain = mix_exact(floats, song.gains_db)
    for stem, audio in stems.items():
        if not np.any(audio):
            parts = song.stem_parts(stem)
            names = sorted({fonts[part.name].name for part in parts})
            raise StemkitError(
                f"{', '.join(names)}: the {stem} stem of track {job.index} rendered silent "
                f"(programs {[part.program for part in parts]}); select other soundfonts"
            )

    used = {part.name: fonts[part.name] for part in song.parts}
    settings = {
        "seed": job.seed,
        "index": job.index,
        "track_seed": seed,
        "split": "heldout" if job.heldout else "train",
        "soundfonts": {part: font.name for part, font in used.items()},
        "effects": effects,
    }
    single = {font.path for font in used.values()}
    meta = {
        **_identity(job),
        "name": job.folder.name,
        "track_seed": seed,
        "sample_rate": song.sample_rate,
        "n_samples": song.n_samples,
        "soundfont": (
            {
                "file": next(iter(used.values())).path.name,
                "sha256": next(iter(used.values())).sha256,
            }
            if len(single) == 1
            else None
        ),
        "soundfonts": {
            part: {"name": f.name, "file": f.path.name, "sha256": f.sha256}
            for part, f in used.items()
        },
        "composition": song.describe(),
        "sung_vocals": describe_voice(song, job.voice),
        "synth_settings": dict(SYNTH_SETTINGS),
        "effects": effects,
        "mix": {
            "common_gain_db": round(20 * float(np.log10(common_gain)), 4),
            "peak_dbfs_target": PEAK_DBFS,
            **bus_report,
        },
        "stats": {name: _stats(audio) for name, audio in {"mixture": mixture, **stems}.items()},
    }

    import soundfile as sf

    temp = job.folder.parent / f".{job.folder.name}.partial-{os.getpid()}"
    if temp.exists():
        shutil.rmtree(temp)
    temp.mkdir(parents=True)
    try:
        for name, audio in {"mixture": mixture, **stems}.items():
            sf.write(temp / f"{name}.wav", audio.T, song.sample_rate, subtype="PCM_16")
        song.to_midi().write(str(temp / "song.mid"))
        (temp / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        (temp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        try:
            temp.rename(job.folder)
        except OSError as error:
            raise DatasetError(
                f"{job.folder}: cannot move the finished track into place ({error}); "
                "is another 'stemkit data synth' writing to the same folder?"
            ) from error
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return job.folder


def mix_exact(
    stems: dict[str, np.ndarray], gains_db: dict[str, float]
) -> tuple[dict[str, np.ndarray], np.ndarray, float]:
    """Apply stem gains and one common gain, quantise to int16, and sum exactly.

    Args:
        stems: ``{stem: (channels, time)}`` float audio.
        gains_db: per-stem gain in dB.

    Returns:
        ``(stems_int16, mixture_int16, common_gain)``: int16 arrays ``(channels, time)`` with
        ``mixture == sum(stems)`` exactly, and every peak at or below -1 dBFS.

    Raises:
        StemkitError: if everything is silent, or (never expected) the sum would clip.
    """
    scaled = {
        name: audio * np.float32(10 ** (gains_db[name] / 20)) for name, audio in stems.items()
    }
    mixture = np.zeros(next(iter(stems.values())).shape, dtype=np.float64)
    for audio in scaled.values():
        mixture += audio
    signals: list[np.ndarray] = [mixture, *scaled.values()]
    peak = max(float(np.abs(a).max()) for a in signals)
    if peak == 0:
        raise StemkitError("every stem rendered silent; check the soundfont")
    common_gain = _TARGET_PEAK / peak
    ints = {name: np.rint(audio * common_gain).astype(np.int16) for name, audio in scaled.items()}
    total = np.zeros(mixture.shape, dtype=np.int32)
    for audio in ints.values():
        total += audio
    limit = int(np.floor(_FULL_SCALE * 10 ** (PEAK_DBFS / 20)))
    quantised: list[np.ndarray] = [total, *ints.values()]
    worst = max(int(np.abs(a.astype(np.int32)).max()) for a in quantised)
    if worst > limit:
        raise StemkitError(f"internal error: mix peak {worst} exceeds the int16 limit {limit}")
    return ints, total.astype(np.int16), common_gain


def _stats(audio: np.ndarray) -> dict[str, float]:
    """Peak and RMS in dBFS, active fraction of 1 s windows, L/R correlation."""
    x = audio.astype(np.float32) / np.float32(_FULL_SCALE)
    power = np.square(x, dtype=np.float64)
    peak = float(np.abs(x).max())
    rms = float(np.sqrt(power.mean()))
    n_windows = x.shape[-1] // SAMPLE_RATE
    if n_windows:
        windows = power[:, : n_windows * SAMPLE_RATE].reshape(x.shape[0], n_windows, SAMPLE_RATE)
        window_rms = np.sqrt(windows.mean(axis=(0, 2)))
        active = float(np.mean(window_rms > 10 ** (ACTIVE_DBFS / 20)))
    else:
        active = float(rms > 10 ** (ACTIVE_DBFS / 20))
    return {
        "peak_dbfs": round(_db(peak), 3),
        "rms_dbfs": round(_db(rms), 3),
        "active_fraction": round(active, 4),
        "lr_correlation": round(lr_correlation(audio), 4),
    }


def _db(value: float) -> float:
    return 20 * float(np.log10(value)) if value > 0 else -200.0
