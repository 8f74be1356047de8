"""A song file to stem files in constant memory: decode, resample, separate, encode in blocks.

:func:`stream_stems` is the streamed body of ``stemkit separate`` (called by
:meth:`stemkit.Separator.separate_to_folder` inside the all-or-nothing folder writer of
:mod:`stemkit.outputs`). It gives the files the in-memory path would write (read the whole song,
``resample``, :func:`~stemkit.inference.separate`, ``resample`` back, ``write_audio``):

- the song is decoded in blocks (:class:`~stemkit.audio.blocks.BlockReader`) and resampled to
  the model's rate with soxr's stream resampler, equal to ``resample`` of the whole song;
- :func:`~stemkit.inference.blockwise.separate_blocks` gives the stems chunk by chunk, equal
  to ``separate`` of the whole song;
- each file's signal (a stem, or the mixture minus a stem for ``--two-stems``) is resampled
  to the output rate block by block and encoded as it comes; at the song's own rate it is cut
  or padded to the song's length, as in memory;
- ``clip="rescale"`` needs each stem's peak before its first sample is written: the stems go to
  hidden float wav files in the folder first, then are rescaled and encoded on a second pass
  (disk, not memory: 4 bytes per sample and channel).

Memory: the model's working set on one batch of chunks, plus buffers of a segment or a block;
nothing grows with the song, except with ``segment=None`` (the whole song as one chunk), which
:func:`file_segment` allows only up to :data:`WHOLE_SONG_LIMIT`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from stemkit.audio.blocks import BlockReader, BlockResampler, BlockWriter

__all__ = ["LONG_SONG_SEGMENT", "WHOLE_SONG_LIMIT", "StemFile", "file_segment", "stream_stems"]

#: Longest song (seconds) a whole-song model (``default_segment`` None: Open-Unmix, X-UMX)
#: separates at once. Nearly every released song is shorter, so their stems do not change;
#: a longer recording (a DJ mix, a concert) is cut into :data:`LONG_SONG_SEGMENT` chunks.
WHOLE_SONG_LIMIT = 600.0
#: Segment (seconds) of a whole-song model on a song past :data:`WHOLE_SONG_LIMIT`: long enough
#: that a bidirectional LSTM and the Wiener statistics see tens of seconds of context on either
#: side of every cross-fade (15 s long at the default overlap), short enough that a song of any
#: length costs about what a 1-minute song costs whole (bench/results/memory.md: 120 s segments
#: cost twice the 1-minute peak with Open-Unmix).
LONG_SONG_SEGMENT = 60.0


def file_segment(segment: float | None, seconds: float, limit: float | None) -> float | None:
    """The segment to separate a song of ``seconds`` with: ``segment`` unless it is the whole
    song (None) and the song is longer than ``limit`` (None: no limit)."""
    if segment is None and limit is not None and seconds > limit:
        return LONG_SONG_SEGMENT
    return segment


@dataclass(frozen=True)
class StemFile:
    """One file of a stem folder.

    Attributes:
        path: where to write it (its extension picks the format).
        source: index of the stem in the model's output.
        complement: write the mixture minus the stem instead (``no_<stem>`` of ``--two-stems``).
    """

    path: Path
    source: int
    complement: bool = False


def stream_stems(
    reader: BlockReader,
    separate: Callable[[Iterable[Tensor], int | None], Iterator[Tensor]],
    files: Sequence[StemFile],
    *,
    model_rate: int,
    rate: int,
    subtype: str,
    clip: Literal["warn", "clamp", "rescale"] = "warn",
    bitrate: int | None = None,
) -> list[Path]:
    """Decode ``reader``, separate it and encode ``files``, block by block.

    Args:
        reader: the song, opened with the model's channel count.
        separate: mixture blocks at ``model_rate`` and their expected total (for a progress
            bar) → stem blocks ``(sources, channels, n)``, e.g. a partial of
            :func:`~stemkit.inference.blockwise.separate_blocks`.
        files: what to write.
        model_rate: the model's rate, Hz.
        rate: the rate of the files, Hz; at the song's own rate they get its exact length.
        subtype, clip, bitrate: as for :func:`~stemkit.audio.write_audio`.

    Returns:
        The paths written, in the order of ``files``.

    Raises:
        AudioError: the song cannot be decoded (also half-way) or a file cannot be encoded;
            every file begun is removed.
        ValueError: the model refuses the song (e.g. shorter than its STFT window).
    """
    song_rate = reader.sample_rate
    channels = reader.channels or reader.file_channels
    rescale = clip == "rescale" and subtype != "FLOAT"
    complements = any(target.complement for target in files)
    pending_mixture: deque[Tensor] = deque()

    def mixture() -> Iterator[Tensor]:
        to_model = BlockResampler(song_rate, model_rate, channels)
        for block in reader:
            out = to_model.process(block)
            if out.shape[-1]:
                if complements:
                    pending_mixture.append(out)
                yield out
        tail = to_model.flush()
        if tail.shape[-1]:
            if complements:
                pending_mixture.append(tail)
            yield tail

    sinks: list[_Sink] = []
    try:
        for target in files:
            path = target.path
            if rescale:
                path = path.with_name(f".{path.stem}.rescale.wav")
            writer = BlockWriter(
                path,
                rate,
                channels,
                subtype="FLOAT" if rescale else subtype,
                clip="clamp" if clip == "rescale" else clip,
                bitrate=None if rescale else bitrate,
            )
            sinks.append(_Sink(writer, BlockResampler(model_rate, rate, channels)))
        total = None if reader.frames <= 0 else round(reader.frames * model_rate / song_rate)
        for stems in separate(mixture(), total):
            mix = _take(pending_mixture, stems.shape[-1]) if complements else None
            for target, sink in zip(files, sinks, strict=True):
                signal = stems[target.source]
                if target.complement:
                    assert mix is not None
                    signal = mix - signal
                sink.push(signal, reader.frames_read if rate == song_rate else None)
        for sink in sinks:
            sink.finish(reader.frames_read if rate == song_rate else None)
        paths = [sink.writer.close() for sink in sinks]
    except BaseException:
        for sink in sinks:
            sink.writer.abort()
        raise
    if not rescale:
        return paths
    return [
        _rescale(temporary, target.path, sink.peak, rate, subtype, bitrate)
        for temporary, target, sink in zip(paths, files, sinks, strict=True)
    ]


def _take(queue: deque[Tensor], count: int) -> Tensor:
    """The first ``count`` samples of the blocks in ``queue``, removed from it."""
    pieces = []
    while count:
        block = queue[0]
        if block.shape[-1] <= count:
            pieces.append(queue.popleft())
            count -= block.shape[-1]
        else:
            pieces.append(block[..., :count])
            queue[0] = block[..., count:]
            count = 0
    return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)


class _Sink:
    """One file's resampler and writer, which keeps the file within the song's length."""

    def __init__(self, writer: BlockWriter, resampler: BlockResampler) -> None:
        self.writer = writer
        self.resampler = resampler
        self.held: Tensor | None = None  # samples past the length known so far
        self.peak = 0.0

    def push(self, signal: Tensor, limit: int | None) -> None:
        self._write(self.resampler.process(signal), limit)

    def finish(self, frames: int | None) -> None:
        """Write the rest; at the song's rate, cut or pad to its ``frames``, as in memory."""
        self._write(self.resampler.flush(), frames)
        if frames is not None and self.writer.frames < frames:
            self._write(torch.zeros(self.writer.channels, frames - self.writer.frames), frames)
        self.held = None

    def _write(self, block: Tensor, limit: int | None) -> None:
        if self.held is not None:
            block = torch.cat([self.held, block], dim=-1)
            self.held = None
        if limit is not None:
            room = max(limit - self.writer.frames, 0)
            if block.shape[-1] > room:
                # Past the song's length so far: kept until it is known whether it has more.
                self.held = block[..., room:]
                block = block[..., :room]
        if block.shape[-1]:
            self.peak = max(self.peak, float(block.abs().max()))
            self.writer.write(block)


def _rescale(
    temporary: Path, path: Path, peak: float, rate: int, subtype: str, bitrate: int | None
) -> Path:
    """Encode the float file ``temporary`` as ``path``, divided by its ``peak`` when above 1
    (as ``write_audio`` rescales: the same float32 division, in numpy)."""
    try:
        with (
            BlockReader(temporary, channels=None) as source,
            BlockWriter(
                path, rate, source.file_channels, subtype=subtype, clip="clamp", bitrate=bitrate
            ) as writer,
        ):
            for block in source:
                data = block.numpy()
                writer.write(data / peak if peak > 1.0 else data)
    finally:
        temporary.unlink(missing_ok=True)
    return path
