"""Audio files in blocks: decode, resample and encode a song of any length in constant memory.

The block counterparts of :func:`~stemkit.audio.read_audio`, :func:`~stemkit.audio.resample`
and :func:`~stemkit.audio.write_audio`, for separating songs whose whole signal should not be
held in memory:

- :class:`BlockReader` decodes with soundfile block by block (ffmpeg through a pipe for the
  formats soundfile does not read), with the same channel handling and checks as
  ``read_audio``;
- :class:`BlockResampler` feeds blocks through soxr's ``ResampleStream``, whose output, joined,
  equals ``soxr.resample`` of the whole signal bit for bit (python-soxr 1.x, every quality);
- :class:`BlockWriter` encodes blocks with ``soundfile.SoundFile`` (or an ffmpeg pipe for mp3
  on a libsndfile without it) into a temporary file renamed over the destination when closed,
  clamping as ``write_audio`` does and warning once per file with the counts of the whole file.

Blocks are float32 tensors ``(channels, block_len)``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import numpy as np
import soundfile as sf
import soxr
import torch
from torch import Tensor

from stemkit.audio.convert import DEFAULT_QUALITY, match_channels
from stemkit.audio.io import (
    _CONTAINERS,
    FFMPEG_EXTENSIONS,
    ClippingWarning,
    PathLike,
    _check_file,
    _check_stream_zero,
    _ffmpeg_may_read,
    _last_line,
    _mp3_compression,
    _opus_compression,
    _probe,
    _sndfile_writes_mp3,
    _unreadable,
    _which,
    _zero_length,
    check_write_settings,
)
from stemkit.errors import AudioError

#: Samples per channel of each decoded block (about 1.5 s at 44.1 kHz: 0.5 MiB of stereo
#: float32, small beside any model's working set, large enough to keep per-block costs low).
BLOCK_FRAMES = 65536


class BlockReader:
    """Decode an audio file block by block: ``for block in reader`` gives ``(channels, n)``.

    Opened in the constructor (so a missing or unreadable file fails at once, as
    ``read_audio`` would); use it as a context manager, or call :meth:`close`.

    Args:
        path: any file :func:`~stemkit.audio.read_audio` reads.
        channels: channel count wanted (mono is copied, more is refused unless ``downmix``);
            None keeps the file's.
        downmix: average more channels than ``channels`` to mono first.
        block_frames: samples per channel of each block (the last may be shorter).

    Attributes:
        sample_rate: the file's rate in Hz.
        file_channels: the file's channel count.
        frames: the length announced by the header (estimated for raw aac); the decoded
            length, counted in :attr:`frames_read`, is what the song has.
        frames_read: samples per channel given out so far.

    Raises:
        AudioError: as :func:`~stemkit.audio.read_audio`: missing, empty, zero-length, corrupt
            or unsupported file, ffmpeg missing, a channel layout that cannot be matched; and,
            while iterating, NaN or infinite samples or data the decoder refuses half-way.
    """

    def __init__(
        self,
        path: PathLike,
        *,
        channels: int | None = 2,
        downmix: bool = False,
        block_frames: int = BLOCK_FRAMES,
    ) -> None:
        if block_frames < 1:
            raise ValueError(f"block_frames must be positive, got {block_frames}")
        self.path = _check_file(path)
        self.channels = channels
        self.downmix = downmix
        self.block_frames = int(block_frames)
        self.frames_read = 0
        self._handle: sf.SoundFile | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        if self.path.suffix.lower() in FFMPEG_EXTENSIONS:
            self._open_ffmpeg(stream=0)
        else:
            _check_stream_zero(self.path, 0)
            try:
                handle = sf.SoundFile(str(self.path))
            except (sf.LibsndfileError, RuntimeError) as error:
                unreadable = _unreadable(self.path, error)
                unreadable.__cause__ = error
                if not _ffmpeg_may_read(self.path, unreadable):
                    raise unreadable from error
                try:
                    self._open_ffmpeg(stream=0)
                except AudioError:
                    raise unreadable from error
            else:
                if handle.frames == 0:
                    handle.close()
                    raise _zero_length(self.path)
                self._handle = handle
                self.sample_rate = int(handle.samplerate)
                self.file_channels = int(handle.channels)
                self.frames = int(handle.frames)
        if channels is not None:
            try:  # refuse an impossible layout before anything is decoded
                match_channels(torch.zeros(self.file_channels, 0), channels, downmix=downmix)
            except ValueError as error:
                self.close()
                raise AudioError(self.path, str(error)) from None

    def _open_ffmpeg(self, stream: int) -> None:
        info, exact = _probe(self.path, stream)
        if exact and info.frames == 0:
            raise _zero_length(self.path)
        ffmpeg = _which("ffmpeg", self.path)
        # the same trim as read_audio: it drops the encoder padding past the container's length
        trim = "atrim=start_sample=0" + (f":end_sample={info.frames}" if exact else "")
        command = [
            ffmpeg, "-v", "error", "-nostdin", "-i", str(self.path), "-map", f"0:a:{stream}",
            "-af", trim, "-f", "f32le", "-c:a", "pcm_f32le", "-",
        ]  # fmt: skip
        # stderr to a file: a pipe nobody reads could fill up and stall ffmpeg
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL
        )
        self.sample_rate = info.sample_rate
        self.file_channels = info.channels
        self.frames = info.frames

    def __iter__(self) -> Iterator[Tensor]:
        for data in self._raw_blocks():
            if not np.isfinite(data).all():
                bad = int(np.argmax(~np.isfinite(data).all(axis=0)))
                raise AudioError(
                    self.path,
                    f"contains NaN or infinite samples (first at sample {self.frames_read + bad})"
                    "; the file is corrupt or was written from a model that diverged",
                )
            self.frames_read += data.shape[1]
            block = torch.from_numpy(data)
            if self.channels is not None:
                block = match_channels(block, self.channels, downmix=self.downmix)
            yield block.contiguous()
        if self.frames_read == 0:
            raise _zero_length(self.path)

    def _raw_blocks(self) -> Iterator[np.ndarray]:
        """Blocks ``(file_channels, n)`` float32 as decoded."""
        if self._handle is not None:
            while True:
                try:
                    data = self._handle.read(self.block_frames, dtype="float32", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as error:
                    raise _unreadable(self.path, error) from error
                if data.shape[0] == 0:
                    return
                yield np.ascontiguousarray(data.T)
            return
        assert self._process is not None and self._process.stdout is not None
        frame_bytes = 4 * self.file_channels
        size = self.block_frames * frame_bytes
        pending = b""
        while True:
            chunk = self._process.stdout.read(size - len(pending))
            if chunk:
                pending += chunk
                if len(pending) < size:
                    continue
            if not pending:
                break
            usable = len(pending) - len(pending) % frame_bytes
            if usable:
                data = np.frombuffer(pending[:usable], dtype="<f4").astype(np.float32)
                yield np.ascontiguousarray(data.reshape(-1, self.file_channels).T)
            pending = pending[usable:]
            if not chunk:
                if pending:
                    raise _unreadable(
                        self.path, RuntimeError("decoded data do not fill whole frames")
                    )
                break
        if self._process.wait() != 0:
            assert self._stderr is not None
            self._stderr.seek(0)
            message = _last_line(self._stderr.read().decode(errors="replace"))
            raise _unreadable(self.path, RuntimeError(message))

    def close(self) -> None:
        """Release the file (and stop ffmpeg if it is still decoding)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            if self._process.stdout is not None:
                self._process.stdout.close()
            self._process.wait()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> BlockReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlockResampler:
    """Resample a stream of blocks from ``orig_rate`` to ``new_rate`` with soxr.

    Joined, the outputs of every :meth:`process` call and of :meth:`flush` equal
    :func:`~stemkit.audio.resample` of the joined inputs, sample for sample. At equal rates
    blocks pass through unchanged.

    Args:
        orig_rate: rate of the input blocks, Hz.
        new_rate: rate wanted, Hz.
        channels: channels of every block.
        quality: soxr quality, as for :func:`~stemkit.audio.resample`.
    """

    def __init__(
        self, orig_rate: int, new_rate: int, channels: int, *, quality: str = DEFAULT_QUALITY
    ) -> None:
        self.channels = int(channels)
        self._stream = (
            None
            if orig_rate == new_rate
            else soxr.ResampleStream(
                int(orig_rate), int(new_rate), self.channels, dtype="float32", quality=quality
            )
        )

    def process(self, block: Tensor) -> Tensor:
        """The resampled samples that ``block`` ``(channels, n)`` completes (maybe none)."""
        if self._stream is None:
            return block.to(torch.float32)
        frames = np.ascontiguousarray(block.detach().cpu().numpy().T, dtype=np.float32)
        return self._out(self._stream.resample_chunk(frames, last=False))

    def flush(self) -> Tensor:
        """The rest of the output, once the input has ended."""
        if self._stream is None:
            return torch.zeros(self.channels, 0)
        empty = np.zeros((0, self.channels), dtype=np.float32)
        return self._out(self._stream.resample_chunk(empty, last=True))

    def _out(self, out: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(out.reshape(-1, self.channels).T))


class BlockWriter:
    """Encode a signal block by block into a wav, flac, mp3, ogg or opus file.

    The blocks go to a temporary file beside ``path``, which :meth:`close` renames over it
    once synced; :meth:`abort` (or leaving the ``with`` block on an exception) removes it, so
    no truncated file ever carries the final name. The file has as many samples as were
    written: joined blocks give the file :func:`~stemkit.audio.write_audio` writes for the
    whole signal.

    Args:
        path, sample_rate, subtype, bitrate: as for :func:`~stemkit.audio.write_audio`.
        channels: channel count of every block.
        clip: ``"warn"`` (clamp, and one :class:`ClippingWarning` at :meth:`close` with the
            count and peak over the whole file) or ``"clamp"``. ``"rescale"`` needs the peak
            of the whole signal before the first sample is written: write FLOAT first (see
            :func:`stemkit.inference.files.stream_stems`) and rescale on a second pass.

    Raises:
        AudioError: bad settings (as ``write_audio``), NaN or infinite samples, a missing
            encoder, or the file system refused a write.
    """

    def __init__(
        self,
        path: PathLike,
        sample_rate: int,
        channels: int,
        *,
        subtype: str | None = None,
        clip: Literal["warn", "clamp"] = "warn",
        bitrate: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.subtype = check_write_settings(
            self.path, sample_rate, subtype=subtype, clip=clip, bitrate=bitrate
        )
        if clip == "rescale":
            raise ValueError("BlockWriter cannot rescale: the peak is known only at the end")
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.clip = clip
        self.frames = 0
        self._clipped = 0
        self._peak = 0.0
        self._handle: sf.SoundFile | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        extension = self.path.suffix.lower()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise AudioError(self.path, f"cannot create its folder ({error})") from error
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            if self.subtype == "MPEG_LAYER_III" and not _sndfile_writes_mp3():
                self._open_ffmpeg_mp3(bitrate or 320)
            else:
                options: dict[str, Any] = {}
                if self.subtype == "MPEG_LAYER_III":
                    options = {
                        "bitrate_mode": "CONSTANT",
                        "compression_level": _mp3_compression(bitrate or 320, self.sample_rate),
                    }
                elif self.subtype == "OPUS" and bitrate is not None:
                    options = {"compression_level": _opus_compression(bitrate)}
                self._handle = sf.SoundFile(
                    str(self._tmp),
                    "w",
                    samplerate=self.sample_rate,
                    channels=self.channels,
                    subtype=self.subtype,
                    format=_CONTAINERS[extension],
                    **options,
                )
        except BaseException as error:
            self.abort()
            if isinstance(error, (OSError, sf.LibsndfileError)):
                raise AudioError(self.path, f"could not be written ({error})") from error
            raise

    def _open_ffmpeg_mp3(self, bitrate: int) -> None:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise AudioError(
                self.path,
                "this libsndfile cannot write mp3 (it needs 1.1 or later) and the ffmpeg program "
                "is missing; write wav or flac, or install ffmpeg",
            )
        command = [
            ffmpeg, "-v", "error", "-nostdin", "-y", "-f", "f32le", "-ar", str(self.sample_rate),
            "-ac", str(self.channels), "-i", "-", "-c:a", "libmp3lame", "-b:a", f"{bitrate}k",
            "-f", "mp3", str(self._tmp),
        ]  # fmt: skip
        self._stderr = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr
        )

    def write(self, block: Tensor | np.ndarray) -> None:
        """Append ``block`` ``(channels, n)`` to the file."""
        if isinstance(block, Tensor):
            data = block.detach().to("cpu", torch.float32).numpy()
        else:
            data = np.asarray(block, dtype=np.float32)
        if data.ndim != 2 or data.shape[0] != self.channels:
            raise AudioError(
                self.path, f"expected blocks ({self.channels}, time), got {data.shape}"
            )
        # A piece at a time, so that the temporaries (checks, clamping, the interleaved copy)
        # stay small whatever the size of the block.
        for start in range(0, data.shape[1], BLOCK_FRAMES):
            self._write(data[:, start : start + BLOCK_FRAMES])

    def _write(self, data: np.ndarray) -> None:
        if not np.isfinite(data).all():
            raise AudioError(self.path, "refusing to write NaN or infinite samples")
        if self.subtype != "FLOAT":
            peak = float(np.abs(data).max(initial=0.0))
            if peak > 1.0:
                self._peak = max(self._peak, peak)
                self._clipped += int((np.abs(data) > 1.0).sum())
                data = np.clip(data, -1.0, 1.0)
        frames = np.ascontiguousarray(data.T)
        try:
            if self._handle is not None:
                self._handle.write(frames)
            else:
                assert self._process is not None and self._process.stdin is not None
                self._process.stdin.write(frames.astype("<f4").tobytes())
        except (OSError, sf.LibsndfileError) as error:
            raise AudioError(self.path, f"could not be written ({error})") from error
        self.frames += data.shape[1]

    def close(self) -> Path:
        """Finish the file and give it its name; returns the path.

        Raises:
            AudioError: the encoder or the file system failed.
        """
        try:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
            if self._process is not None:
                assert self._process.stdin is not None
                self._process.stdin.close()
                if self._process.wait() != 0:
                    assert self._stderr is not None
                    self._stderr.seek(0)
                    message = _last_line(self._stderr.read().decode(errors="replace"))
                    raise AudioError(self.path, f"ffmpeg could not encode it as mp3 ({message})")
                self._process = None
            if self._stderr is not None:
                self._stderr.close()
                self._stderr = None
            with open(self._tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(self._tmp, self.path)
        except BaseException as error:
            self.abort()
            if isinstance(error, (OSError, sf.LibsndfileError)):
                raise AudioError(self.path, f"could not be written ({error})") from error
            raise
        if self._clipped and self.clip == "warn":
            size = self.frames * self.channels
            warnings.warn(
                f"{self.path}: clipped {self._clipped} of {size} samples "
                f"({100 * self._clipped / size:.3g} %, peak {self._peak:.3f}) to [-1, 1]; "
                "write FLOAT (--bits 32) to keep them, or rescale",
                ClippingWarning,
                stacklevel=2,
            )
        return self.path

    def abort(self) -> None:
        """Drop the file: nothing is left under either name."""
        if self._handle is not None:
            try:
                self._handle.close()
            except (OSError, sf.LibsndfileError, RuntimeError):
                pass
            self._handle = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._process.wait()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
