"""Real-time separation of causal models: blocks of samples in, blocks of stems out.

:class:`StreamingSeparator` wraps any model that can give a
:class:`~stemkit.models.base.FrameStream` (``model.frame_stream()``; today a causal Open-Unmix
separator: unidirectional cores, mixture phase, ``niter=0``). It
keeps three pieces of state between calls: the STFT analysis buffer (input samples that do not
yet fill a frame), the model's own state inside its frame stream (the LSTM hidden and cell
states of every core), and the overlap-add buffer of the synthesis (frames whose window has not
been fully summed yet).

Exactness and latency. The stream reproduces the offline separator, including its
``center=True`` STFT: the reflect padding at the start needs only the first ``n_fft // 2 + 1``
samples, and the reflect padding at the end is applied by :meth:`StreamingSeparator.flush`,
when the end is known. The output is the offline output delayed by ``latency_samples``
samples, ``D``:

    streamed[..., :D] == 0 and streamed[..., D:D + N] == separator(mixture)[0]

for a mixture of ``N`` samples, where ``streamed`` joins the outputs of every ``process`` call
and of ``flush``, ``N + D`` samples in all.

An output sample is final once every frame that overlaps it has been computed, i.e. after
``n_fft - n_hop`` more samples have arrived, plus up to ``n_hop - 1`` samples of waiting for the
hop grid. For blocks of any size the delay must cover the worst case, ``D = n_fft - 1``; when
every block has the same declared size ``B``, only the grid positions that blocks of ``B``
reach count, and ``D`` can be smaller: ``n_fft - n_hop`` (3072 samples, 69.7 ms at 44.1 kHz for
the umx setting 4096/1024) when ``B`` is a multiple of the hop and ``n_fft // 2`` is too.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from stemkit.models.base import SeparationModel

__all__ = ["StreamingSeparator", "streaming_latency"]


def _finalized(received: int, n_fft: int, n_hop: int) -> int:
    """Output samples of the offline separator that are final after ``received`` inputs.

    Frame ``k`` covers padded samples ``[k·hop, k·hop + n_fft)`` (padded index = input index +
    ``n_fft // 2``); it can be computed once those have arrived, and frame 0 also needs the
    sample its start reflection mirrors last. A padded sample is final when no frame still to
    come starts at or before it.
    """
    pad = n_fft // 2
    if received < pad + 1 or received + pad < n_fft:
        return 0
    nb_frames = (received + pad - n_fft) // n_hop + 1
    return max(0, nb_frames * n_hop - pad)


def streaming_latency(n_fft: int, n_hop: int, block_size: int | None = None) -> int:
    """Smallest constant delay (samples) at which a stream can give out what it takes in.

    Args:
        n_fft: FFT size of the separator.
        n_hop: hop size.
        block_size: the size of every block, or ``None`` when blocks may have any size.

    Returns:
        ``D`` such that after any number ``M`` of received samples reachable with these
        blocks, the first ``M - D`` offline output samples are final.
    """
    step = 1 if block_size is None else int(block_size)
    if step < 1:
        raise ValueError(f"block_size must be positive, got {block_size}")
    # Past the first n_fft samples, M - finalized(M) repeats with period n_hop in M, hence
    # with period n_hop / gcd(step, n_hop) in blocks: scan the head and one full period.
    count = math.ceil((n_fft + 1) / step) + n_hop // math.gcd(step, n_hop) + 1
    return max(step * j - _finalized(step * j, n_fft, n_hop) for j in range(1, count + 1))


class StreamingSeparator:
    """Block-by-block separation with a causal model.

    The model is put in eval mode (batch norm must use its running statistics, and LSTM
    dropout must be off, for a frame's output to depend on the past only).

    Args:
        separator: a model whose :meth:`~stemkit.models.base.SeparationModel.frame_stream`
            succeeds, e.g. ``build("umx", unidirectional=True)`` (``niter`` 0).
        block_size: the number of samples every :meth:`process` call will hold, which lowers
            the latency (see the module docstring); ``None`` accepts blocks of any size.

    Raises:
        StemkitError: the model cannot stream (it looks into the future: a bidirectional LSTM
            reads later frames, Wiener EM pools statistics over blocks of frames; or it does
            not work on STFT frames).

    Example:
        >>> stream = StreamingSeparator(build("umx", unidirectional=True), block_size=1024)
        >>> for block in blocks:  # (channels, 1024)
        ...     stems = stream.process(block)  # (sources, channels, 1024)
        >>> tail = stream.flush()  # (sources, channels, latency_samples)
    """

    def __init__(self, separator: SeparationModel, block_size: int | None = None) -> None:
        frames = separator.frame_stream()
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be a positive number of samples, got {block_size}")
        self.separator = separator.eval()
        self.frames = frames
        self.block_size = block_size
        self.n_fft = frames.n_fft
        self.n_hop = frames.n_hop
        self._pad = self.n_fft // 2
        self._latency = streaming_latency(self.n_fft, self.n_hop, block_size)
        parameter = next(separator.parameters(), None)
        self._device = parameter.device if parameter is not None else torch.device("cpu")
        self._window = torch.hann_window(self.n_fft, device=self._device)
        self.reset()

    @property
    def sources(self) -> tuple[str, ...]:
        """Names of the stems, in output order."""
        return self.separator.sources

    @property
    def sample_rate(self) -> int:
        """Rate in Hz of the input and output blocks."""
        return self.separator.sample_rate

    @property
    def latency_samples(self) -> int:
        """Algorithmic latency: the output is the offline output delayed by this many samples."""
        return self._latency

    @property
    def latency_seconds(self) -> float:
        """:attr:`latency_samples` in seconds."""
        return self._latency / self.sample_rate

    def describe(self) -> str:
        """One line: the stream's configuration and its latency in samples and seconds."""
        blocks = "any size" if self.block_size is None else f"{self.block_size} samples"
        name = self.separator.model_name or type(self.separator).__name__
        return (
            f"streaming {name}: {len(self.sources)} stems ({', '.join(self.sources)}), "
            f"{self.sample_rate} Hz, n_fft {self.n_fft}, hop {self.n_hop}, blocks of {blocks}; "
            f"latency {self._latency} samples = {self.latency_seconds:.4f} s"
        )

    def reset(self) -> None:
        """Forget the stream: the next block starts a new signal."""
        self._channels: int | None = None
        self._received = 0
        self._emitted = 0
        self._started = False
        # analysis input: raw samples until the start reflection is known, padded after;
        # _buffer[..., 0] is padded sample _buffer_start
        self._buffer = torch.zeros(0, device=self._device)
        self._buffer_start = 0
        self._tail = torch.zeros(0, device=self._device)  # the last pad + 1 raw samples
        self._next_frame = 0
        self.frames.reset()
        # synthesis: overlap-added windowed frames and summed squared windows from padded
        # sample _ola_start on; _ready holds final output samples not given out yet
        self._ola = torch.zeros(0, device=self._device)
        self._envelope = torch.zeros(0, device=self._device)
        self._ola_start = 0
        self._ready = torch.zeros(0, device=self._device)

    @torch.no_grad()
    def process(self, block: Tensor) -> Tensor:
        """Separate the next block of the stream.

        Args:
            block: ``(channels, block_len)`` samples following the previous block; any
                ``block_len`` unless ``block_size`` was declared. The channel count is fixed by
                the first block.

        Returns:
            ``(sources, channels, block_len)``: the offline separation of the stream delayed by
            :attr:`latency_samples` (zeros until the delay has passed).
        """
        block = self._check_block(block)
        if self.block_size is not None and block.shape[-1] != self.block_size:
            raise ValueError(
                f"this stream was declared with block_size={self.block_size}, got a block of "
                f"{block.shape[-1]} samples; pass the last, shorter block to flush()"
            )
        self._append(block)
        self._compute_frames()
        self._finalize(self._next_frame * self.n_hop)
        return self._emit(self._received)

    @torch.no_grad()
    def flush(self, block: Tensor | None = None) -> Tensor:
        """End the stream and return what is still owed, then :meth:`reset`.

        Args:
            block: an optional last block ``(channels, block_len)`` of any length.

        Returns:
            ``(sources, channels, block_len + latency_samples)``: the rest of the delayed
            offline output, so that the stream gave out ``N + latency_samples`` samples for
            ``N`` taken in. An empty stream returns ``(sources, channels, 0)``.

        Raises:
            ValueError: the stream holds fewer than ``n_fft // 2 + 1`` samples, too short for
                the offline STFT too.
        """
        if block is not None:
            self._append(self._check_block(block))
        total = self._received
        channels = self._channels if self._channels is not None else self.separator.audio_channels
        if total == 0:
            self.reset()
            return torch.zeros(len(self.sources), channels, 0, device=self._device)
        if not self._started:
            minimum = self._pad + 1
            self.reset()
            raise ValueError(
                f"a stream of {total} samples is too short for an STFT with n_fft={self.n_fft}; "
                f"give at least {minimum} samples"
            )
        # the end reflection, as torch.stft(center=True) pads: x[N-2], ..., x[N-1-pad]
        self._buffer = torch.cat([self._buffer, self._tail[:, :-1].flip(-1)], dim=-1)
        self._compute_frames()
        self._finalize(total + self._pad)
        out = self._emit(total + self._latency)
        self.reset()
        return out

    # -- internals ------------------------------------------------------------------------

    def _check_block(self, block: Tensor) -> Tensor:
        if block.dim() != 2:
            raise ValueError(f"expected a block (channels, block_len), got {tuple(block.shape)}")
        if block.is_complex():
            raise ValueError("expected a real waveform block, got a complex tensor")
        channels = block.shape[0]
        if self.separator.audio_channels == 2 and channels != 2:
            raise ValueError(f"this separator takes stereo blocks, got {channels} channel(s)")
        if self._channels is not None and channels != self._channels:
            raise ValueError(
                f"the stream started with {self._channels} channel(s), this block has {channels}"
            )
        self._channels = channels
        return block.to(device=self._device, dtype=torch.float32)

    def _append(self, block: Tensor) -> None:
        if self._received == 0:
            self._buffer = block.new_zeros(block.shape[0], 0)
            self._tail = block.new_zeros(block.shape[0], 0)
        self._received += block.shape[-1]
        self._buffer = torch.cat([self._buffer, block], dim=-1)
        self._tail = torch.cat([self._tail, block], dim=-1)[:, -(self._pad + 1) :]
        if not self._started and self._received >= self._pad + 1:
            # the start reflection x[pad], ..., x[1]: the buffer holds all raw samples so far
            reflection = self._buffer[:, 1 : self._pad + 1].flip(-1)
            self._buffer = torch.cat([reflection, self._buffer], dim=-1)
            self._buffer_start = 0
            self._started = True

    def _compute_frames(self) -> None:
        """Run every frame the analysis buffer now covers through STFT, cores and synthesis."""
        if not self._started:
            return
        end = self._buffer_start + self._buffer.shape[-1]
        if end < self.n_fft:
            return
        last = (end - self.n_fft) // self.n_hop
        if last < self._next_frame:
            return
        first = self._next_frame
        start = first * self.n_hop - self._buffer_start
        stop = last * self.n_hop + self.n_fft - self._buffer_start
        mix_stft = torch.stft(
            self._buffer[:, start:stop],
            n_fft=self.n_fft,
            hop_length=self.n_hop,
            window=self._window,
            center=False,
            normalized=False,
            onesided=True,
            return_complex=True,
        ).unsqueeze(0)  # (1, channels, nb_bins, nb_frames)
        stems = self.frames(mix_stft)[0]  # (sources, channels, nb_bins, nb_frames)
        self._overlap_add(stems, first)
        self._next_frame = last + 1
        keep_from = self._next_frame * self.n_hop
        self._buffer = self._buffer[:, keep_from - self._buffer_start :]
        self._buffer_start = keep_from

    def _overlap_add(self, stems: Tensor, first: int) -> None:
        """Add the inverse FFTs of ``stems`` (frames ``first``, ...) into the synthesis buffer."""
        nb_frames = stems.shape[-1]
        frames = torch.fft.irfft(stems, n=self.n_fft, dim=-2) * self._window[:, None]
        if self._ola.numel() == 0:
            self._ola = frames.new_zeros(*frames.shape[:2], 0)
            self._envelope = frames.new_zeros(0)
            self._ola_start = first * self.n_hop
        end = (first + nb_frames - 1) * self.n_hop + self.n_fft - self._ola_start
        grow = end - self._ola.shape[-1]
        if grow > 0:
            self._ola = torch.cat([self._ola, self._ola.new_zeros(*self._ola.shape[:2], grow)], -1)
            self._envelope = torch.cat([self._envelope, self._envelope.new_zeros(grow)])
        square = self._window.square()
        for index in range(nb_frames):
            offset = (first + index) * self.n_hop - self._ola_start
            self._ola[..., offset : offset + self.n_fft] += frames[..., index]
            self._envelope[offset : offset + self.n_fft] += square

    def _finalize(self, end: int) -> None:
        """Move the overlap-added samples before padded index ``end`` to the ready queue."""
        count = min(end - self._ola_start, self._ola.shape[-1])
        if count <= 0:
            return
        done, envelope = self._ola[..., :count], self._envelope[:count]
        # padded samples before self._pad are the start reflection, not output
        skip = max(0, self._pad - self._ola_start)
        if skip < count:
            samples = done[..., skip:] / envelope[skip:]
            if self._ready.numel() == 0:
                self._ready = samples
            else:
                self._ready = torch.cat([self._ready, samples], dim=-1)
        self._ola = self._ola[..., count:]
        self._envelope = self._envelope[count:]
        self._ola_start += count

    def _emit(self, until: int) -> Tensor:
        """Stream positions ``[emitted, until)``: zeros within the delay, then ready samples."""
        count = until - self._emitted
        channels = self._channels if self._channels is not None else self.separator.audio_channels
        zeros = min(max(self._latency - self._emitted, 0), count)
        needed = count - zeros
        pieces = [torch.zeros(len(self.sources), channels, zeros, device=self._device)]
        if needed:
            if self._ready.shape[-1] < needed:  # pragma: no cover - guarded by the latency
                raise RuntimeError(
                    f"streaming fell behind: {needed} samples owed, {self._ready.shape[-1]} ready"
                )
            pieces.append(self._ready[..., :needed])
            self._ready = self._ready[..., needed:]
        self._emitted = until
        return torch.cat(pieces, dim=-1)
