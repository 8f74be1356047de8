"""Reading and writing audio files.

soundfile (libsndfile) handles wav, flac, aiff, ogg (Vorbis, Opus) and mp3 and can seek, so an
excerpt never loads the whole file. Everything else ffmpeg decodes (m4a, aac, wma, webm, video
containers, …; and the ``.stem.mp4`` files of MUSDB18, whose first audio stream is the mixture
and the next four the stems) goes through the ``ffmpeg`` and ``ffprobe`` programs, and so does a
file of a soundfile extension that libsndfile cannot read (an mp3 on a libsndfile older than
1.1, a wav holding a codec it lacks) when ffmpeg can.

Writing: wav, flac, mp3 (constant bit rate), ogg (Vorbis) and opus (Ogg Opus), through
soundfile; mp3 through ffmpeg when libsndfile was built without it.

Every failure raises :class:`~stemkit.errors.AudioError` naming the file and what to do.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from torch import Tensor

from stemkit.audio.convert import match_channels, resample
from stemkit.errors import AudioError

PathLike = str | os.PathLike[str]

#: Extensions read through soundfile (seekable); ffmpeg is the fallback when it fails.
SOUNDFILE_EXTENSIONS: tuple[str, ...] = (
    ".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".w64", ".rf64",
    ".caf", ".au",
)  # fmt: skip
#: Extensions decoded by the ffmpeg program.
FFMPEG_EXTENSIONS: tuple[str, ...] = (
    ".m4a", ".aac", ".mp4", ".m4b", ".alac", ".wma", ".asf", ".wv", ".ape", ".ac3", ".eac3",
    ".dts", ".mp2", ".amr", ".mka", ".mkv", ".webm", ".mov", ".avi", ".3gp", ".tta", ".mpc",
)  # fmt: skip
#: Every extension :func:`read_audio` accepts (and that a folder of songs is searched for).
READ_EXTENSIONS: tuple[str, ...] = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS
#: Subtypes :func:`write_audio` accepts for each extension.
WRITE_SUBTYPES: dict[str, tuple[str, ...]] = {
    ".wav": ("PCM_16", "PCM_24", "FLOAT"),
    ".flac": ("PCM_16", "PCM_24"),
    ".mp3": ("MPEG_LAYER_III",),
    ".ogg": ("VORBIS", "OPUS"),
    ".opus": ("OPUS",),
}
#: libsndfile container of each written extension.
_CONTAINERS: dict[str, str] = {
    ".wav": "WAV", ".flac": "FLAC", ".mp3": "MP3", ".ogg": "OGG", ".opus": "OGG",
}  # fmt: skip
#: Rates (Hz) the lossy codecs can store; other formats take any rate.
WRITE_RATES: dict[str, tuple[int, ...]] = {
    "MPEG_LAYER_III": (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000),
    "OPUS": (8000, 12000, 16000, 24000, 48000),
}
#: Constant bit rates (kbit/s) an MPEG-1 layer III stream (32 to 48 kHz) can use.
MP3_BITRATES: tuple[int, ...] = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
#: Target bit rates of Opus, kbit/s (libsndfile's range; libopus picks ~120 kbit/s stereo
#: when none is given).
OPUS_BITRATES: tuple[int, int] = (6, 512)

#: Samples decoded and dropped before a seek point (4 mp3 frames of 1152 samples).
_SEEK_WARMUP: dict[str, int] = {".mp3": 4 * 1152}

_INSTALL_FFMPEG = (
    "install ffmpeg (Debian/Ubuntu: `apt install ffmpeg`, macOS: `brew install ffmpeg`, "
    "conda: `conda install -c conda-forge ffmpeg`) or convert the file to wav or flac"
)


class ClippingWarning(UserWarning):
    """Samples outside [-1, 1] were clamped when writing an integer-PCM file."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding it.

    Attributes:
        frames: length in samples per channel. For m4a/mp4 it comes from the container and
            for raw ``.aac`` from the bit rate, so the decoded length may differ slightly.
        sample_rate: rate in Hz.
        channels: number of channels.
        duration: ``frames / sample_rate`` in seconds.
        format: container or codec name (``"WAV"``, ``"FLAC"``, ``"aac"``, ...).
    """

    frames: int
    sample_rate: int
    channels: int
    duration: float
    format: str


def audio_info(path: PathLike, *, stream: int = 0) -> AudioInfo:
    """Describe an audio file without decoding it.

    Args:
        path: the file.
        stream: for m4a/mp4, which audio stream (``.stem.mp4``: 0 = mixture, 1-4 = stems).

    Raises:
        AudioError: the file is missing, empty, of an unsupported type or unreadable.
    """
    path = _check_file(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        return _probe(path, stream)[0]
    _check_stream_zero(path, stream)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as error:
        unreadable = _unreadable(path, error)
        unreadable.__cause__ = error
        if not _ffmpeg_may_read(path, unreadable):
            raise unreadable from error
        try:
            return _probe(path, 0)[0]
        except AudioError:
            raise unreadable from error
    return AudioInfo(
        frames=int(info.frames),
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        duration=info.frames / info.samplerate,
        format=str(info.format),
    )


def read_audio(
    path: PathLike,
    *,
    start: int = 0,
    frames: int | None = None,
    sample_rate: int | None = None,
    channels: int | None = 2,
    downmix: bool = False,
    stream: int = 0,
) -> tuple[Tensor, int]:
    """Read a file, or an excerpt of it, as a float32 tensor ``(channels, time)``.

    Args:
        path: an audio file: one of :data:`READ_EXTENSIONS` (wav, flac, aiff, ogg, opus, mp3,
            m4a, aac, wma, mp4, …).
        start: first sample to read, counted at the file's own rate. soundfile formats seek
            to it; nothing before it is decoded into memory.
        frames: how many samples to read at the file's rate; None reads to the end. An
            excerpt running past the end of the file is cut at the end.
        sample_rate: rate wanted in Hz; the excerpt is resampled with soxr when the file's
            rate differs. None keeps the file's rate.
        channels: channel count wanted: mono is copied to every channel; more channels than
            asked is an error unless ``downmix``. None keeps the file's channels.
        downmix: average the channels to mono (then copy) when the file has more than
            ``channels``.
        stream: for m4a/mp4, the audio stream to decode (``.stem.mp4``: 0 = mixture,
            1-4 = drums, bass, other, vocals in the MUSDB18 order).

    Returns:
        ``(audio, rate)``: float32 ``(channels, time)`` and its rate in Hz.

    Raises:
        AudioError: missing, empty, zero-length, corrupt or unsupported file; NaN or
            infinite samples; ffmpeg missing; unsupported channel layout; start past the end.
        ValueError: negative ``start`` or ``frames``.
    """
    if start < 0 or (frames is not None and frames < 0):
        raise ValueError(f"start and frames must be non-negative, got {start} and {frames}")
    path = _check_file(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        data, rate = _read_ffmpeg(path, start=start, frames=frames, stream=stream)
    else:
        _check_stream_zero(path, stream)
        try:
            data, rate = _read_soundfile(path, start=start, frames=frames)
        except AudioError as error:
            if not _ffmpeg_may_read(path, error):
                raise
            try:
                data, rate = _read_ffmpeg(path, start=start, frames=frames, stream=0)
            except AudioError:
                raise error from None  # libsndfile's word on a file neither can read
    if data.shape[1] == 0:
        raise AudioError(path, "no samples were decoded in the requested range")
    if not np.isfinite(data).all():
        bad = int(np.argmax(~np.isfinite(data).all(axis=0)))
        raise AudioError(
            path,
            f"contains NaN or infinite samples (first at sample {start + bad}); the file is "
            "corrupt or was written from a model that diverged",
        )
    audio = torch.from_numpy(data)
    if channels is not None:
        try:
            audio = match_channels(audio, channels, downmix=downmix)
        except ValueError as error:
            raise AudioError(path, str(error)) from None
    if sample_rate is not None and sample_rate != rate:
        audio = resample(audio, rate, sample_rate)
        rate = int(sample_rate)
    return audio.contiguous(), rate


def write_audio(
    path: PathLike,
    audio: Tensor | np.ndarray,
    sample_rate: int,
    *,
    subtype: str | None = None,
    clip: Literal["warn", "clamp", "rescale"] = "warn",
    bitrate: int | None = None,
) -> Path:
    """Write ``audio`` ``(channels, time)`` to a wav, flac, mp3, ogg or opus file, atomically.

    The data go to a temporary file in the destination folder which is then renamed over
    ``path``, so a crash never leaves a truncated file under the final name.

    Args:
        path: destination; its extension picks the container (``.wav``, ``.flac``, ``.mp3``,
            ``.ogg``: Ogg Vorbis, ``.opus``: Ogg Opus).
        audio: float signal ``(channels, time)``, or ``(time,)`` for mono.
        sample_rate: rate in Hz; mp3 and opus store only the rates of :data:`WRITE_RATES`.
        subtype: one of :data:`WRITE_SUBTYPES` for the extension: ``"PCM_16"``, ``"PCM_24"``
            or (wav only) ``"FLOAT"``; ``"MPEG_LAYER_III"``; ``"VORBIS"`` or ``"OPUS"``.
            None: the first listed (16-bit for wav and flac).
        clip: what to do with samples outside [-1, 1] for every subtype but ``"FLOAT"``:
            ``"warn"`` clamps them and emits a :class:`ClippingWarning` saying how many there
            were; ``"clamp"`` clamps silently; ``"rescale"`` divides the whole signal by its peak.
        bitrate: mp3: constant bit rate in kbit/s, one of :data:`MP3_BITRATES` (None: 320);
            Opus: target (variable) bit rate in kbit/s within :data:`OPUS_BITRATES` (None:
            libopus' choice).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        AudioError: unsupported extension, subtype, rate or bit rate, NaN or infinite samples,
            bad shape, a missing encoder, or the file system refused the write.
    """
    path = Path(path)
    subtype = check_write_settings(path, sample_rate, subtype=subtype, clip=clip, bitrate=bitrate)
    extension = path.suffix.lower()
    if isinstance(audio, Tensor):
        data = audio.detach().to("cpu", torch.float32).numpy()
    else:
        data = np.asarray(audio, dtype=np.float32)
    if data.ndim == 1:
        data = data[None]
    if data.ndim != 2 or data.shape[0] < 1:
        raise AudioError(path, f"expected audio of shape (channels, time), got {data.shape}")
    if not np.isfinite(data).all():
        raise AudioError(path, "refusing to write NaN or infinite samples")
    if subtype != "FLOAT":
        data = _limit(path, data, clip)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AudioError(path, f"cannot create its folder ({error})") from error
    # Reserve a unique name with O_EXCL (mode 0o666 so the umask applies, unlike mkstemp).
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        frames = np.ascontiguousarray(data.T)
        if subtype == "MPEG_LAYER_III" and not _sndfile_writes_mp3():
            _write_mp3_ffmpeg(path, tmp, frames, int(sample_rate), bitrate or 320)
        else:
            options: dict[str, Any] = {}
            if subtype == "MPEG_LAYER_III":
                options = {
                    "bitrate_mode": "CONSTANT",
                    "compression_level": _mp3_compression(bitrate or 320, int(sample_rate)),
                }
            elif subtype == "OPUS" and bitrate is not None:
                options = {"compression_level": _opus_compression(bitrate)}
            sf.write(
                str(tmp),
                frames,
                int(sample_rate),
                subtype=subtype,
                format=_CONTAINERS[extension],
                **options,
            )
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, (OSError, sf.LibsndfileError)):
            raise AudioError(path, f"could not be written ({error})") from error
        raise
    return path


def check_write_settings(
    path: Path,
    sample_rate: int,
    *,
    subtype: str | None,
    clip: str,
    bitrate: int | None,
) -> str:
    """Validate the settings of :func:`write_audio` for ``path``; returns the subtype to use.

    Raises:
        AudioError: unsupported extension, subtype, rate or bit rate.
        ValueError: an unknown ``clip``.
    """
    extension = path.suffix.lower()
    if extension not in WRITE_SUBTYPES:
        raise AudioError(
            path,
            f"cannot write {extension or 'files without extension'}; "
            f"use {', '.join(WRITE_SUBTYPES)}",
        )
    subtype = WRITE_SUBTYPES[extension][0] if subtype is None else subtype.upper()
    if subtype not in WRITE_SUBTYPES[extension]:
        raise AudioError(
            path,
            f"{extension} files are written as {' or '.join(WRITE_SUBTYPES[extension])}, "
            f"not {subtype}" + ("; use .wav for FLOAT" if extension == ".flac" else ""),
        )
    if clip not in ("warn", "clamp", "rescale"):
        raise ValueError(f"clip must be 'warn', 'clamp' or 'rescale', got {clip!r}")
    rates = WRITE_RATES.get(subtype)
    if rates is not None and int(sample_rate) not in rates:
        raise AudioError(
            path,
            f"{extension} files store {', '.join(f'{r:g}' for r in rates)} Hz, not "
            f"{sample_rate} Hz; resample first",
        )
    if bitrate is not None:
        _check_bitrate(path, subtype, bitrate)
    return subtype


def _sndfile_writes_mp3() -> bool:
    """Whether this libsndfile (1.1 or later, built with LAME) writes mp3."""
    return "MP3" in sf.available_formats()


def _check_bitrate(path: Path, subtype: str, bitrate: int) -> None:
    """Refuse a bit rate the codec of ``subtype`` cannot be set to."""
    if subtype == "MPEG_LAYER_III" and bitrate in MP3_BITRATES:
        return
    low, high = OPUS_BITRATES
    if subtype == "OPUS" and low <= bitrate <= high:
        return
    raise AudioError(
        path,
        f"a bit rate of {bitrate} kbit/s cannot be written; mp3 takes "
        f"{', '.join(map(str, MP3_BITRATES))}, opus {low} to {high}, other formats none",
    )


def _opus_compression(bitrate: int) -> float:
    """libsndfile's compression level for an Opus target ``bitrate`` (kbit/s): it maps the
    level ``c`` in [0, 1] linearly onto 512 down to 6 kbit/s."""
    low, high = OPUS_BITRATES
    return (high - bitrate) / (high - low)


def _mp3_compression(bitrate: int, sample_rate: int) -> float:
    """libsndfile's compression level for a constant ``bitrate`` (kbit/s): it maps the level
    ``c`` in [0, 1] linearly onto the bit rates of the rate's MPEG version and truncates,
    e.g. ``int(320 - c * 288)`` at 32 kHz and above."""
    low, high = (32, 320) if sample_rate >= 32000 else (8, 160) if sample_rate >= 16000 else (8, 64)
    # A quarter kbit/s above the target, so that the truncation lands on it.
    return min(1.0, max(0.0, (high - bitrate - 0.25) / (high - low)))


def _write_mp3_ffmpeg(
    path: Path, tmp: Path, frames: np.ndarray, sample_rate: int, bitrate: int
) -> None:
    """Encode ``frames`` ``(time, channels)`` float32 as a constant-bit-rate mp3 with ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            path,
            "this libsndfile cannot write mp3 (it needs 1.1 or later) and the ffmpeg program is "
            f"missing; write wav or flac, or {_INSTALL_FFMPEG.split(' or ')[0]}",
        )
    command = [
        ffmpeg, "-v", "error", "-nostdin", "-y", "-f", "f32le", "-ar", str(sample_rate),
        "-ac", str(frames.shape[1]), "-i", "-", "-c:a", "libmp3lame", "-b:a", f"{bitrate}k",
        "-f", "mp3", str(tmp),
    ]  # fmt: skip
    result = subprocess.run(
        command, input=frames.astype("<f4").tobytes(), capture_output=True, check=False
    )
    if result.returncode != 0:
        message = _last_line(result.stderr.decode(errors="replace"))
        raise AudioError(path, f"ffmpeg could not encode it as mp3 ({message})")


def _ffmpeg_may_read(path: Path, error: AudioError) -> bool:
    """Whether a file libsndfile failed to decode (``error``) is worth handing to ffmpeg: the
    decoder refused it (not a zero length or a bad range) and the ffmpeg program exists."""
    cause = error.__cause__
    decoder_failed = isinstance(cause, (sf.LibsndfileError, RuntimeError))
    return (
        decoder_failed
        and shutil.which("ffmpeg") is not None
        and shutil.which("ffprobe") is not None
    )


def _limit(path: Path, data: np.ndarray, clip: str) -> np.ndarray:
    """Keep ``data`` within [-1, 1] as asked by ``clip``."""
    peak = float(np.abs(data).max(initial=0.0))
    if peak <= 1.0:
        return data
    if clip == "rescale":
        return data / peak
    if clip == "warn":
        count = int((np.abs(data) > 1.0).sum())
        warnings.warn(
            f"{path}: clipped {count} of {data.size} samples "
            f"({100 * count / data.size:.3g} %, peak {peak:.3f}) to [-1, 1]; write FLOAT "
            "(--bits 32) to keep them, or rescale",
            ClippingWarning,
            stacklevel=3,
        )
    return np.clip(data, -1.0, 1.0)


def _check_file(path: PathLike) -> Path:
    """Refuse missing, empty and unsupported files before any decoder sees them."""
    path = Path(path)
    if not path.exists():
        raise AudioError(path, "no such file")
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if path.suffix.lower() not in READ_EXTENSIONS:
        raise AudioError(
            path,
            f"unsupported extension {path.suffix or '(none)'!r}; supported: "
            f"{', '.join(READ_EXTENSIONS)} (convert other formats to wav or flac)",
        )
    if path.stat().st_size == 0:
        raise AudioError(path, "the file is empty (0 bytes)")
    return path


def _check_stream_zero(path: Path, stream: int) -> None:
    if stream != 0:
        raise AudioError(
            path, f"has a single audio stream; stream={stream} is only for m4a/mp4 files"
        )


def _unreadable(path: Path, error: Exception) -> AudioError:
    kind = path.suffix.lower()[1:]
    return AudioError(
        path,
        f"not a readable {kind} file; it may be corrupt, truncated or of another format "
        f"(decoder said: {error})",
    )


def _zero_length(path: Path) -> AudioError:
    return AudioError(path, "contains no audio (zero length)")


def _read_soundfile(path: Path, *, start: int, frames: int | None) -> tuple[np.ndarray, int]:
    try:
        with sf.SoundFile(str(path)) as handle:
            total = handle.frames
            if total == 0:
                raise _zero_length(path)
            if start >= total:
                raise AudioError(
                    path, f"start sample {start} is past the end of the file ({total} samples)"
                )
            count = total - start if frames is None else min(frames, total - start)
            # An mp3 decoder that lands mid-stream lacks the bit reservoir of the frames
            # before, so its first output differs from a full decode: start decoding a few
            # frames early and drop them to make an excerpt equal the slice of a full read.
            warmup = min(start, _SEEK_WARMUP.get(path.suffix.lower(), 0))
            if start:
                handle.seek(start - warmup)
            data = handle.read(count + warmup, dtype="float32", always_2d=True)[warmup:]
            rate = handle.samplerate
    except (sf.LibsndfileError, RuntimeError) as error:
        raise _unreadable(path, error) from error
    return np.ascontiguousarray(data.T), int(rate)


def _which(program: str, path: Path) -> str:
    found = shutil.which(program)
    if found is None:
        raise AudioError(
            path, f"reading {path.suffix} files needs the {program} program; {_INSTALL_FFMPEG}"
        )
    return found


def _probe(path: Path, stream: int) -> tuple[AudioInfo, bool]:
    """ffprobe one audio stream; the flag says whether ``frames`` is exact (from the container)."""
    ffprobe = _which("ffprobe", path)
    command = [
        ffprobe, "-v", "error", "-select_streams", "a",
        "-show_entries", "stream=codec_name,sample_rate,channels,duration,duration_ts,time_base",
        "-show_entries", "format=duration", "-of", "json", str(path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise _unreadable(path, RuntimeError(_last_line(result.stderr)))
    try:
        report = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise _unreadable(path, error) from error
    streams = report.get("streams") or []
    if not streams:
        raise AudioError(path, "has no audio stream")
    if not 0 <= stream < len(streams):
        raise AudioError(
            path, f"has no audio stream {stream}; it has {len(streams)} (0 to {len(streams) - 1})"
        )
    entry = streams[stream]
    try:
        rate = int(entry["sample_rate"])
        channels = int(entry["channels"])
    except (KeyError, ValueError) as error:
        raise _unreadable(
            path, RuntimeError(f"ffprobe gave no rate or channels ({error})")
        ) from error
    # The container's sample count is exact when the stream is timed in samples (mp4/m4a);
    # otherwise (raw ADTS .aac) only a duration estimated from the bit rate is known.
    exact = entry.get("time_base") == f"1/{rate}" and "duration_ts" in entry
    if exact:
        nb_frames = int(entry["duration_ts"])
    else:
        seconds = entry.get("duration") or report.get("format", {}).get("duration") or 0
        nb_frames = round(float(seconds) * rate)
    if rate <= 0 or channels <= 0:
        raise _unreadable(path, RuntimeError(f"ffprobe gave rate {rate} and channels {channels}"))
    info = AudioInfo(nb_frames, rate, channels, nb_frames / rate, str(entry.get("codec_name")))
    return info, exact


def _read_ffmpeg(
    path: Path, *, start: int, frames: int | None, stream: int
) -> tuple[np.ndarray, int]:
    info, exact = _probe(path, stream)
    if exact and info.frames == 0:
        raise _zero_length(path)
    if exact and start >= info.frames:
        raise AudioError(
            path, f"start sample {start} is past the end of the file ({info.frames} samples)"
        )
    ffmpeg = _which("ffmpeg", path)
    # atrim counts samples at the stream's own rate, so the excerpt is sample-exact; the end
    # also drops the encoder padding that AAC decoders return past the container's length.
    end = None if frames is None else start + frames
    if exact:
        end = info.frames if end is None else min(end, info.frames)
    trim = [f"start_sample={start}"] + ([] if end is None else [f"end_sample={end}"])
    command = [
        ffmpeg, "-v", "error", "-nostdin", "-i", str(path), "-map", f"0:a:{stream}",
        "-af", "atrim=" + ":".join(trim), "-f", "f32le", "-c:a", "pcm_f32le", "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        message = _last_line(result.stderr.decode(errors="replace"))
        raise _unreadable(path, RuntimeError(message))
    data = np.frombuffer(result.stdout, dtype="<f4")
    if data.size == 0:
        if start == 0:
            raise _zero_length(path)
        raise AudioError(path, f"start sample {start} is past the end of the file")
    if data.size % info.channels:
        raise _unreadable(path, RuntimeError("decoded data do not fill whole frames"))
    data = data.reshape(-1, info.channels).T.astype(np.float32)
    return np.ascontiguousarray(data), info.sample_rate


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no message"
