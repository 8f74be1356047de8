"""Model-agnostic separation of a signal of any length, one fixed-size chunk at a time.

The mixture is cut into chunks of ``segment`` seconds that overlap by a fraction of a
segment. The model never hears silence the song does not have: the last chunk is moved back
so that it ends with the song (its extra overlap with the previous chunk is read but only the
part from its regular place onwards is used), and a song shorter than one segment goes through
whole, at its own length. Chunks go
through the model ``batch_size`` at a time and their predictions are joined with linear
cross-fades. A cross-fade is written as ``torch.lerp(previous, new, weight)``, which returns
``previous`` exactly when ``new == previous``: chunking never alters a prediction on which
neighbouring chunks agree, and the identity model comes back bit for bit.

The weight of the incoming chunk across an overlap follows ``window`` (:data:`WINDOWS`):
``"linear"`` ramps from the previous chunk to the new one; ``"rectangular"`` weights both
chunks equally (plain averaging, as overlap-add with a rectangular window); ``"triangular"``
weights each chunk by a triangle over its whole segment (Demucs' ``apply_model``), normalised
by the sum of the two weights: with at most two chunks overlapping it is the linear ramp up
to the triangle's discretisation. Every weight goes through ``lerp``, so all three leave
agreeing predictions exact.

The shift trick (Demucs) runs the whole procedure again on copies of the mixture delayed by
random offsets in [0, 0.5 s), undoes each delay and averages the predictions, again through
``lerp`` (a running mean) so that equal predictions stay exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from stemkit.models.base import SeparationModel

#: Cross-fade windows of :func:`separate`.
WINDOWS = ("linear", "rectangular", "triangular")

#: Largest random delay of the shift trick, in seconds (the value Demucs uses).
MAX_SHIFT_SECONDS = 0.5


def check_settings(
    segment: float | None, overlap: float, batch_size: int, shifts: int, window: str = "linear"
) -> None:
    """Validate the chunking settings of :func:`separate`.

    Raises:
        ValueError: a setting is out of range; the message says which and why.
    """
    if segment is not None and not (math.isfinite(segment) and segment > 0):
        raise ValueError(f"segment must be a positive number of seconds or None, got {segment}")
    if not 0.0 <= overlap <= 0.5:
        # Beyond half a segment three chunks would cover some samples, and a cross-fade only
        # blends two.
        raise ValueError(
            f"overlap must be a fraction of the segment between 0 and 0.5, got {overlap}: "
            "above 0.5 more than two chunks would overlap"
        )
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
    if int(shifts) != shifts or shifts < 0:
        raise ValueError(f"shifts must be a non-negative integer, got {shifts}")
    if window not in WINDOWS:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")


def separate(
    model: SeparationModel,
    mixture: Tensor,
    *,
    segment: float | None = None,
    overlap: float = 0.25,
    batch_size: int = 1,
    shifts: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    generator: torch.Generator | None = None,
    on_progress: Callable[[int, int], object] | None = None,
    window: str = "linear",
) -> Tensor:
    """Separate a whole mixture with ``model``, chunk by chunk.

    Args:
        model: maps ``(batch, channels, time)`` to ``(batch, sources, channels, time)``; its
            ``audio_channels`` must match the mixture, and ``segment`` and the shift delays
            are counted at its ``sample_rate``. It is moved to ``device`` and run in eval mode
            (its mode is restored after).
        mixture: ``(channels, time)``.
        segment: chunk length in seconds; None runs the whole mixture at once.
        overlap: overlap of neighbouring chunks as a fraction of ``segment``, in [0, 0.5].
        batch_size: how many chunks go through the model at once.
        shifts: number of random delays for the shift trick; 0 turns it off.
        device: where the model runs; the result comes back on the CPU.
        progress: show a tqdm bar over the chunks on stderr.
        generator: random source of the shift delays, for reproducible results.
        on_progress: called as ``on_progress(done, total)`` after each batch of chunks, the
            counts summed over the shift passes (the web service's progress bars).
        window: cross-fade across overlaps, one of :data:`WINDOWS` (see the module docstring).

    Returns:
        ``(sources, channels, time)`` on the CPU, in the dtype of ``mixture``.

    Raises:
        ValueError: bad settings, a mixture that is not ``(channels, time)``, or a model whose
            output does not have the expected shape.
    """
    check_settings(segment, overlap, batch_size, shifts, window)
    if mixture.ndim != 2 or mixture.shape[-1] == 0:
        raise ValueError(
            f"the mixture must be (channels, time) with time > 0, got {tuple(mixture.shape)}"
        )
    if not mixture.is_floating_point():
        raise ValueError(f"the mixture must be a float tensor, got {mixture.dtype}")
    nb_channels, nb_samples = mixture.shape
    if model.audio_channels != nb_channels:
        raise ValueError(
            f"the model takes {model.audio_channels} channel(s) but the mixture has {nb_channels}"
        )
    rate = model.sample_rate
    segment_length = None
    if segment is not None:
        segment_length = max(1, round(segment * rate))
    # Floor keeps overlap_length ≤ hop, which the two-chunk cross-fade relies on.
    overlap_length = 0 if segment_length is None else int(overlap * segment_length)
    delays = _draw_delays(shifts, rate, generator)
    totals = [_nb_chunks(nb_samples + delay, segment_length, overlap_length) for delay in delays]

    mixture = mixture.detach().to("cpu")
    was_training = model.training
    model.to(device)
    model.eval()
    from tqdm.auto import tqdm

    bar = tqdm(total=sum(totals), unit="chunk", disable=not progress, leave=False)
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        bar.update(count)
        done += count
        if on_progress is not None:
            on_progress(done, sum(totals))

    try:
        result: Tensor | None = None
        for count, delay in enumerate(delays, start=1):
            estimate = _one_pass(
                model,
                mixture,
                delay,
                segment_length,
                overlap_length,
                batch_size,
                device,
                advance,
                window,
            )
            if result is None:
                result = estimate
            else:
                # Running mean as lerp: the mean of equal predictions is exactly that value.
                result = torch.lerp(result, estimate, 1.0 / count)
    finally:
        bar.close()
        model.train(was_training)
    assert result is not None
    return result


def _draw_delays(shifts: int, rate: int | None, generator: torch.Generator | None) -> list[int]:
    """Delays in samples: ``[0]`` without the shift trick, else ``shifts`` random ones."""
    if not shifts:
        return [0]
    assert rate is not None
    max_shift = max(1, int(MAX_SHIFT_SECONDS * rate))
    return torch.randint(0, max_shift, (shifts,), generator=generator).tolist()


def _nb_chunks(nb_samples: int, segment_length: int | None, overlap_length: int) -> int:
    if segment_length is None or nb_samples <= segment_length:
        return 1
    hop = segment_length - overlap_length
    return math.ceil((nb_samples - segment_length) / hop) + 1


def _one_pass(
    model: nn.Module,
    mixture: Tensor,
    delay: int,
    segment_length: int | None,
    overlap_length: int,
    batch_size: int,
    device: str | torch.device,
    advance: Callable[[int], object],
    window: str = "linear",
) -> Tensor:
    """Separate ``mixture`` ``(channels, time)`` delayed by ``delay`` samples of silence.

    The delayed signal is chunked as a whole, and the stems are read back from the same
    offset, so the result ``(sources, channels, time)`` is aligned with ``mixture``. The
    delayed signal is never built: each chunk is cut (zero-filled inside the delay) when its
    batch is formed.
    """
    nb_channels, nb_samples = mixture.shape
    virtual_length = delay + nb_samples
    if segment_length is None or virtual_length <= segment_length:
        # One chunk: the whole (delayed) signal at its own length, no padding.
        segment_length = virtual_length
    hop = segment_length - overlap_length
    nb_chunks = _nb_chunks(virtual_length, segment_length, overlap_length)
    # Zero-padding the last chunk would feed a bidirectional model (an LSTM running backward,
    # Wiener statistics pooled over a block) silence that changes its output over the song's
    # last seconds. So the last chunk reads the final ``segment_length`` samples instead; on the
    # regular grid it would start at (nb_chunks - 1) * hop >= last_start.
    last_start = virtual_length - segment_length
    fade = cross_fade(window, overlap_length, segment_length, mixture.dtype)

    def cut(index: int) -> Tensor:
        chunk = mixture.new_zeros((nb_channels, segment_length))
        # position of the chunk's first sample in the mixture (negative inside the delay)
        begin = min(index * hop, last_start) - delay
        lo, hi = max(begin, 0), min(begin + segment_length, nb_samples)
        if lo < hi:
            chunk[:, lo - begin : hi - begin] = mixture[:, lo:hi]
        return chunk

    output: Tensor | None = None
    for first, predictions in _run_batches(model, cut, nb_chunks, batch_size, device):
        if output is None:
            # Allocated outside inference mode, so the caller gets an ordinary tensor that
            # it may edit in place.
            output = torch.empty((*predictions.shape[1:3], nb_samples), dtype=mixture.dtype)
        for offset, prediction in enumerate(predictions):
            index = first + offset
            begin = index * hop - delay
            # the moved last chunk: drop the prediction before its regular place
            prediction = prediction[..., index * hop - min(index * hop, last_start) :]
            if index == 0 or overlap_length == 0:
                _place(output, begin, prediction)
            else:
                # The overlap was written by the previous chunk only (overlap ≤ hop).
                _place(output, begin, prediction[..., :overlap_length], fade)
                _place(output, begin + overlap_length, prediction[..., overlap_length:])
        advance(len(predictions))
    assert output is not None
    return output


def cross_fade(
    window: str, overlap_length: int, segment_length: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Weights ``(overlap_length,)`` of the incoming chunk across an overlap, in ``(0, 1)``.

    ``linear``: ``(t + 1) / (overlap + 1)``, symmetric, so both chunks always contribute;
    ``rectangular``: ½ everywhere; ``triangular``: ``w(t) / (w(t) + w(hop + t))`` for the
    triangle ``w`` over one segment (1 … ⌈S/2⌉ … 1, as Demucs), ``hop = S − overlap``.
    """
    t = torch.arange(overlap_length, dtype=torch.float64)
    if window == "rectangular":
        fade = torch.full_like(t, 0.5)
    elif window == "triangular":
        half = segment_length // 2
        triangle = torch.cat(
            [
                torch.arange(1, half + 1, dtype=torch.float64),
                torch.arange(segment_length - half, 0, -1, dtype=torch.float64),
            ]
        )
        hop = segment_length - overlap_length
        incoming, previous = triangle[:overlap_length], triangle[hop : hop + overlap_length]
        fade = incoming / (incoming + previous)
    elif window == "linear":
        fade = (t + 1) / (overlap_length + 1)
    else:
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, got {window!r}")
    return fade.to(dtype)


def _place(output: Tensor, begin: int, values: Tensor, fade: Tensor | None = None) -> None:
    """Write ``values`` at ``begin`` into ``output``, or cross-fade into what is there.

    The parts that fall before 0 (the delay of the shift trick) or after the end are dropped.
    """
    length = values.shape[-1]
    lo, hi = max(begin, 0), min(begin + length, output.shape[-1])
    if lo >= hi:
        return
    part = values[..., lo - begin : hi - begin]
    if fade is None:
        output[..., lo:hi] = part
    else:
        output[..., lo:hi] = torch.lerp(output[..., lo:hi], part, fade[lo - begin : hi - begin])


def _run_batches(
    model: nn.Module,
    cut: Callable[[int], Tensor],
    nb_chunks: int,
    batch_size: int,
    device: str | torch.device,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(index of the first chunk, predictions (batch, sources, channels, segment))``."""
    for first in range(0, nb_chunks, batch_size):
        batch = torch.stack([cut(i) for i in range(first, min(first + batch_size, nb_chunks))])
        yield first, predict(model, batch, device)


def predict(model: nn.Module, batch: Tensor, device: str | torch.device) -> Tensor:
    """``model`` on ``batch`` ``(batch, channels, segment)``: ``(batch, sources, channels,
    segment)`` on the CPU in the batch's dtype, its shape checked."""
    with torch.inference_mode():
        predictions = model(batch.to(device))
    expected = (batch.shape[0], batch.shape[1], batch.shape[2])
    got = tuple(predictions.shape)
    if len(got) != 4 or (got[0], got[2], got[3]) != expected:
        raise ValueError(
            "the model must map (batch, channels, time) = "
            f"{tuple(batch.shape)} to (batch, sources, channels, time), got "
            f"{got}"
        )
    return predictions.to("cpu", batch.dtype)
