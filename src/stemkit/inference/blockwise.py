"""Chunked separation of a stream of blocks: the stems of :func:`separate`, given out as they
become final, in memory that does not grow with the song.

:func:`separate_blocks` takes the mixture as an iterable of blocks ``(channels, n)`` and yields
the stems ``(sources, channels, m)`` in order. It cuts the same chunks as the in-memory
:func:`~stemkit.inference.separate` (same grid, same batches, the last chunk moved back to end
with the song, the same shift delays drawn from the same generator), runs the model on the same
batches and cross-fades them with the same ``lerp`` calls on slices of the same shapes, so the
joined output equals ``separate(model, whole_mixture, ...)`` bit for bit.

What it holds at any time, per shift pass: the input from the start of the previous chunk on
(at most ``segment + batch_size · hop`` samples plus one block), one batch of predictions and
a window of ``segment + 1`` output samples; the merged output waits only for the slowest pass.
A chunk's output is final once the next chunk is placed (the overlap is cross-faded), so the
output lags the input by about ``segment + (batch_size − 1) · hop`` samples.

Whether a chunk is the last one (moved back to end with the song) is known only once the song
has more samples than the chunk's regular end, or has ended: a batch is formed when every
chunk in it is known not to be the last, or at the end of the stream.

With ``segment=None`` (the whole song at once) there is one chunk: the whole input is held
until the stream ends, as in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from stemkit.inference.chunked import _draw_delays, _nb_chunks, _place, check_settings, predict
from stemkit.models.base import SeparationModel

__all__ = ["PIECE_FRAMES", "separate_blocks"]

#: Most samples per yielded piece of stems. A chunk makes up to a segment of output final at
#: once (the whole last chunk); handing it on in pieces keeps what the caller derives from each
#: (resampled, encoded copies) small and the same for every song length.
PIECE_FRAMES = 65536


def separate_blocks(
    model: SeparationModel,
    blocks: Iterable[Tensor],
    *,
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 1,
    shifts: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    generator: torch.Generator | None = None,
    total: int | None = None,
    on_progress: Callable[[int, int], object] | None = None,
) -> Iterator[Tensor]:
    """Separate a mixture given block by block; yield its stems as they become final.

    Args:
        model, segment, overlap, batch_size, shifts, device, progress, generator: as for
            :func:`stemkit.inference.separate`.
        blocks: the mixture ``(channels, n)`` in order, at the model's rate; blocks may have
            any length (empty ones are skipped).
        total: the expected number of samples, for the progress reports only.
        on_progress: called as ``on_progress(done, total)`` after each batch of chunks, the
            counts summed over the shift passes; ``total`` is estimated from ``total`` samples
            (never below ``done``), and is exact once the stream ends.

    Yields:
        ``(sources, channels, m)`` on the CPU in the blocks' dtype; joined, they equal
        ``separate(model, torch.cat(blocks, -1), ...)`` with the same settings and generator
        state.

    Raises:
        ValueError: bad settings, blocks that are not ``(channels, n)`` float with the model's
            channel count, an empty stream, or a model output of the wrong shape.
    """
    check_settings(segment, overlap, batch_size, shifts)
    rate = model.sample_rate
    segment_length = None if segment is None else max(1, round(segment * rate))
    overlap_length = 0 if segment_length is None else int(overlap * segment_length)
    delays = _draw_delays(shifts, rate, generator)

    from tqdm.auto import tqdm

    bar_total = None
    if total is not None:
        bar_total = sum(_nb_chunks(total + d, segment_length, overlap_length) for d in delays)
    bar = tqdm(total=bar_total, unit="chunk", disable=not progress, leave=False)

    done = 0

    def run(batch: Tensor) -> Tensor:
        nonlocal done
        predictions = predict(model, batch, device)
        bar.update(batch.shape[0])
        done += batch.shape[0]
        if on_progress is not None:
            on_progress(done, max(done, bar_total or 0))
        return predictions

    passes = [_Pass(run, delay, segment_length, overlap_length, batch_size) for delay in delays]
    was_training = model.training
    model.to(device)
    model.eval()
    received = 0
    try:
        for block in blocks:
            block = _check_block(block, model.audio_channels)
            if block.shape[-1] == 0:
                continue
            received += block.shape[-1]
            for one in passes:
                one.push(block)
            yield from _merge(passes)
        if received == 0:
            raise ValueError("the mixture must be (channels, time) with time > 0, got no samples")
        bar_total = sum(_nb_chunks(received + d, segment_length, overlap_length) for d in delays)
        bar.total = bar_total
        for one in passes:
            one.finish()
        yield from _merge(passes)
    finally:
        bar.close()
        model.train(was_training)


def _check_block(block: Tensor, channels: int) -> Tensor:
    if block.ndim != 2:
        raise ValueError(f"blocks must be (channels, time), got {tuple(block.shape)}")
    if not block.is_floating_point():
        raise ValueError(f"the mixture must be a float tensor, got {block.dtype}")
    if block.shape[0] != channels:
        raise ValueError(
            f"the model takes {channels} channel(s) but the mixture has {block.shape[0]}"
        )
    return block.detach().to("cpu")


def _merge(passes: list[_Pass]) -> Iterator[Tensor]:
    """The output every pass has made final, averaged over the passes as in memory."""
    count = min(one.ready_frames for one in passes)
    if count == 0:
        return
    estimates = [one.take(count) for one in passes]
    result = estimates[0]
    for index, estimate in enumerate(estimates[1:], start=2):
        # the running mean of separate(): lerp keeps equal predictions exact
        result = torch.lerp(result, estimate, 1.0 / index)
    for start in range(0, count, PIECE_FRAMES):
        yield result[..., start : start + PIECE_FRAMES]


class _Pass:
    """One pass of the chunked separation (one shift delay), fed block by block.

    Positions: *virtual* counts the delayed signal (``delay`` zeros, then the mixture), as
    ``_one_pass`` cuts it; the output is counted in mixture samples.
    """

    def __init__(
        self,
        run: Callable[[Tensor], Tensor],
        delay: int,
        segment_length: int | None,
        overlap_length: int,
        batch_size: int,
    ) -> None:
        self.run = run
        self.delay = delay
        self.segment = segment_length
        self.overlap = overlap_length
        self.hop = None if segment_length is None else segment_length - overlap_length
        self.batch_size = batch_size
        # the input from virtual sample buffer_start on, as the blocks came (joining them
        # into one growing tensor would reallocate a segment's worth for every block)
        self.buffer: deque[Tensor] = deque()
        self.buffer_start = 0
        self.received = delay  # virtual samples so far
        self.ended = False
        self.done = False
        self.next_chunk = 0
        # output samples [window_start, window_start + segment + 1); the extra sample keeps
        # every slice narrower than the window, as slices of the whole output are in memory
        self.window: Tensor | None = None
        self.window_start = 0
        self.fade: Tensor | None = None
        self.ready: list[Tensor] = []
        self.ready_frames = 0

    def push(self, block: Tensor) -> None:
        if self.received == self.delay and self.delay:
            self.buffer.append(block.new_zeros((block.shape[0], self.delay)))
        self.buffer.append(block)
        self.received += block.shape[-1]
        self._advance()

    def finish(self) -> None:
        self.ended = True
        self._advance()

    def take(self, count: int) -> Tensor:
        """The next ``count`` final output samples ``(sources, channels, count)``."""
        joined = self.ready[0] if len(self.ready) == 1 else torch.cat(self.ready, dim=-1)
        out, rest = joined[..., :count], joined[..., count:]
        self.ready = [rest] if rest.shape[-1] else []
        self.ready_frames -= count
        return out

    def _emit(self, samples: Tensor) -> None:
        if samples.shape[-1]:
            self.ready.append(samples)
            self.ready_frames += samples.shape[-1]

    def _cut(self, batch: Tensor, index: int, begin: int) -> None:
        """Copy virtual samples ``[begin, begin + segment)`` into ``batch[index]``."""
        position, filled = self.buffer_start, 0
        length = batch.shape[-1]
        for block in self.buffer:
            end = position + block.shape[-1]
            if end > begin + filled:
                lo = begin + filled - position
                take = min(block.shape[-1] - lo, length - filled)
                batch[index, :, filled : filled + take] = block[:, lo : lo + take]
                filled += take
                if filled == length:
                    return
            position = end
        raise AssertionError(f"chunk at {begin} runs past the buffer")  # pragma: no cover

    def _drop_before(self, keep: int) -> None:
        """Forget the blocks that end at or before virtual sample ``keep``."""
        while self.buffer and self.buffer_start + self.buffer[0].shape[-1] <= keep:
            self.buffer_start += self.buffer.popleft().shape[-1]

    def _advance(self) -> None:
        if self.done:
            return
        segment = self.segment
        if segment is None or self.received <= segment:
            # Perhaps a single chunk: the whole (delayed) signal at its own length.
            if not self.ended:
                return
            whole = torch.cat(list(self.buffer), dim=-1)[None]
            self.buffer.clear()
            prediction = self.run(whole)[0]
            del whole
            self._emit(prediction[..., self.delay :])
            self.done = True
            return
        assert self.hop is not None
        hop = self.hop
        while True:
            first = self.next_chunk
            last_start: int | None = None
            if self.ended:
                nb_chunks = _nb_chunks(self.received, segment, self.overlap)
                if first >= nb_chunks:
                    self.done = True
                    self.buffer.clear()
                    return
                count = min(self.batch_size, nb_chunks - first)
                last_start = self.received - segment
            else:
                # every chunk of the batch must be known not to be the last: the signal goes
                # on past its regular end
                if self.received <= (first + self.batch_size - 1) * hop + segment:
                    return
                count = self.batch_size
                nb_chunks = None
            block = self.buffer[0]
            batch = block.new_empty((count, block.shape[0], segment))
            for offset, index in enumerate(range(first, first + count)):
                begin = index * hop if last_start is None else min(index * hop, last_start)
                self._cut(batch, offset, begin)
            predictions = self.run(batch)
            for offset, prediction in enumerate(predictions):
                index = first + offset
                is_last = nb_chunks is not None and index == nb_chunks - 1
                self._place(index, prediction, last_start, is_last)
            self.next_chunk = first + count
            # The next chunk starts at or after the regular start of the one before it (the
            # moved last chunk starts after it, since that one is not the last).
            self._drop_before(max(0, (self.next_chunk - 1) * hop))

    def _place(self, index: int, prediction: Tensor, last_start: int | None, is_last: bool) -> None:
        """Place chunk ``index`` as ``_one_pass`` does, then give out what became final."""
        assert self.hop is not None and self.segment is not None
        hop, overlap = self.hop, self.overlap
        nb_samples = self.received - self.delay  # the mixture's length, once ended
        if self.window is None:
            self.window = prediction.new_zeros((*prediction.shape[:2], self.segment + 1))
            self.fade = torch.arange(1, overlap + 1, dtype=prediction.dtype) / (overlap + 1)
        begin = index * hop - self.delay - self.window_start
        if last_start is not None:
            prediction = prediction[..., index * hop - min(index * hop, last_start) :]
        view = self.window
        if is_last:
            view = view[..., : nb_samples - self.window_start]
        if index == 0 or overlap == 0:
            _place(view, begin, prediction)
        else:
            _place(view, begin, prediction[..., :overlap], self.fade)
            _place(view, begin + overlap, prediction[..., overlap:])
        # final: everything before the next chunk's regular start (all, after the last chunk)
        final = nb_samples if is_last else max((index + 1) * hop - self.delay, 0)
        shift = final - self.window_start
        if shift <= 0:
            return
        self._emit(self.window[..., :shift].clone())
        if not is_last:
            width = self.window.shape[-1]
            self.window[..., : width - shift] = self.window[..., shift:].clone()
        self.window_start = final
