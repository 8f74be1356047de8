"""The Python API: a model ready to separate arrays, tensors and audio files.

:class:`Separator` is what ``stemkit separate`` runs for every song: the command line parses
its options, finds the songs and names their folders; the separator reads, separates and writes.

Example::

    import stemkit

    separator = stemkit.Separator.from_pretrained("default")
    stems = separator.separate(audio, 44100)  # {"vocals": array like audio, ...}
    separator.separate_file("song.wav", "separated")  # separated/song/vocals.wav, ...

Not to be confused with :class:`stemkit.models.spectral.Separator`, the masking wrapper of the
spectrogram models (a model, not a user-facing object).

Library code logs to ``logging.getLogger("stemkit")`` (with a :class:`logging.NullHandler`);
configure logging to see the warnings (clipped samples) and the debug lines.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from stemkit.errors import AudioError, StemkitError

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import Tensor

    from stemkit.energy import CodeCarbon
    from stemkit.models.base import SeparationModel
    from stemkit.outputs import FileNames

    ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

logger = logging.getLogger(__name__)

#: Output format name → (file extension, soundfile subtype when the sample size does not
#: choose it: the lossy codecs).
FORMATS: Final[dict[str, tuple[str, str | None]]] = {
    "wav": (".wav", None),
    "flac": (".flac", None),
    "mp3": (".mp3", "MPEG_LAYER_III"),
    "ogg": (".ogg", "VORBIS"),
    "opus": (".opus", "OPUS"),
}

#: Bits per sample of wav and flac → soundfile subtype.
SUBTYPES: Final[dict[int, str]] = {16: "PCM_16", 24: "PCM_24", 32: "FLOAT"}

#: mp3 constant bit rates (MPEG-1 layer III, kbit/s).
MP3_BITRATES: Final[tuple[int, ...]] = (
    32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
)  # fmt: skip
#: Opus target bit rates, kbit/s (lowest, highest).
OPUS_BITRATES: Final[tuple[int, int]] = (6, 512)
#: Rates of MPEG-1 layer III, the mp3 the bit rates above apply to.
MP3_RATES: Final[tuple[int, ...]] = (32000, 44100, 48000)

#: Registry names that separate without trained weights.
WEIGHTLESS: Final[frozenset[str]] = frozenset({"identity"})

Clip = Literal["warn", "clamp", "rescale"]


@dataclass(frozen=True)
class StemFiles:
    """How stem files are written.

    Attributes:
        format: a key of :data:`FORMATS` (wav, flac, mp3, ogg, opus).
        subtype: the soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"``, or the codec).
        rate: ``"input"`` (the song's rate), ``"model"`` (the model's) or a rate in Hz; opus is
            always written at 48000 Hz and mp3 at the next rate it stores.
        bitrate: kbit/s: mp3's constant bit rate, or Opus' target (None: libopus' choice,
            about 120 kbit/s stereo); None for the other formats.
        clip: samples beyond [-1, 1] in every subtype but ``"FLOAT"``: clamp with a logged
            warning (``"warn"``), clamp silently, or rescale the stem by its peak.
    """

    format: str = "wav"
    subtype: str = "PCM_16"
    rate: int | Literal["input", "model"] = "input"
    bitrate: int | None = None
    clip: Clip = "warn"

    @classmethod
    def of(cls, format: str = "wav", **settings: Any) -> StemFiles:
        """The default settings of ``format``: 16-bit wav and flac, 320 kbit/s mp3.

        Raises:
            StemkitError: an unknown format.
        """
        if format not in FORMATS:
            raise StemkitError(f"format {format!r}: use one of {', '.join(FORMATS)}")
        lossy = FORMATS[format][1]
        settings.setdefault("subtype", lossy or SUBTYPES[16])
        settings.setdefault("bitrate", 320 if format == "mp3" else None)
        return cls(format=format, **settings)

    @classmethod
    def from_options(
        cls,
        format: str = "wav",
        bits: int | None = None,
        bitrate: int | None = None,
        sample_rate: str | int = "input",
        clip: str = "warn",
    ) -> StemFiles:
        """The settings ``stemkit separate`` (and the web service) take, checked together.

        Args:
            format: a key of :data:`FORMATS`.
            bits: wav and flac: 16, 24 or (wav only) 32 for float; None: 16.
            bitrate: kbit/s: mp3 (one of :data:`MP3_BITRATES`, default 320) or Opus (within
                :data:`OPUS_BITRATES`); None for the other formats.
            sample_rate: ``"input"``, ``"model"`` or a rate in Hz (1000 to 384000).
            clip: ``"warn"``, ``"clamp"`` or ``"rescale"``.

        Raises:
            StemkitError: an unknown format, or an option the format does not take (the
                message names it as the command line does, e.g. ``--bits``).
        """
        if format not in FORMATS:
            raise StemkitError(f"format {format!r}: use one of {', '.join(FORMATS)}")
        extension, lossy = FORMATS[format]
        if lossy is not None and bits is not None:
            raise StemkitError(
                f"--bits sets the sample size of wav and flac; {format} has none (drop --bits)"
            )
        if bits is not None and bits not in SUBTYPES:
            raise StemkitError(f"--bits {bits}: use {', '.join(map(str, SUBTYPES))}")
        if bitrate is not None:
            low, high = OPUS_BITRATES
            if format == "mp3" and bitrate not in MP3_BITRATES:
                raise StemkitError(
                    f"--bitrate {bitrate}: mp3 takes {', '.join(map(str, MP3_BITRATES))} kbit/s"
                )
            if format == "opus" and not low <= bitrate <= high:
                raise StemkitError(f"--bitrate {bitrate}: opus takes {low} to {high} kbit/s")
            if format not in ("mp3", "opus"):
                raise StemkitError("--bitrate applies to --format mp3 and opus only")
        subtype = lossy or SUBTYPES[bits or 16]
        if extension == ".flac" and subtype == "FLOAT":
            raise StemkitError(
                "flac stores 16 or 24-bit integers; use --bits 16/24 or --format wav"
            )
        if clip not in ("warn", "clamp", "rescale"):
            raise StemkitError(f"--clip {clip!r}: use warn, clamp or rescale")
        rate: int | Literal["input", "model"]
        text = str(sample_rate).strip().lower()
        if text in ("input", "model"):
            rate = "input" if text == "input" else "model"
        else:
            try:
                rate = int(text)
            except ValueError:
                rate = 0
            if not 1000 <= rate <= 384000:
                raise StemkitError(
                    f"--sample-rate {sample_rate!r}: use input, model or a rate in Hz "
                    "from 1000 to 384000"
                )
        if format == "mp3":
            bitrate = bitrate or 320
        return cls(format, subtype, rate, bitrate, clip)  # type: ignore[arg-type]

    @property
    def extension(self) -> str:
        """The file extension, e.g. ``".wav"``."""
        return FORMATS[self.format][0]

    def rate_for(self, song_rate: int, model_rate: int) -> int:
        """The rate the stems are written at: as asked, then moved to one the codec stores."""
        if self.rate == "input":
            rate = song_rate
        elif self.rate == "model":
            rate = model_rate
        else:
            rate = int(self.rate)
        if self.subtype == "OPUS":
            return 48000  # Ogg Opus is 48 kHz: decoders play every file at that rate anyway
        if self.subtype == "MPEG_LAYER_III":
            return min((r for r in MP3_RATES if r >= rate), default=MP3_RATES[-1])
        return rate


def is_untrained(name: str, *, random_weights: bool = False) -> bool:
    """Whether ``name`` builds a registered architecture with random weights.

    Checkpoint files, bundled and catalogue models (:mod:`stemkit.artifacts.catalogue`) and the
    :data:`WEIGHTLESS` models have their weights. A name that is both a catalogue entry and a
    registry architecture (``umx``) means the published weights, unless ``random_weights``.
    """
    from stemkit import models
    from stemkit.artifacts import BUNDLED, CATALOGUE

    path = Path(name)
    if path.suffix in {".pt", ".pth", ".ckpt"} or path.is_file():
        return False
    if name in BUNDLED or name in WEIGHTLESS:
        return False
    if name in CATALOGUE and not random_weights:
        return False
    return name in models.available()


class Separator:
    """A separation model with its chunking settings, ready for songs of any length.

    Build one with :meth:`from_pretrained`, or wrap a model you hold.

    Args:
        model: maps ``(batch, channels, time)`` to ``(batch, sources, channels, time)``.
        name: how the model was named (checkpoint path, bundled or registry name); it is
            recorded in the marker file of every stem folder.
        device: ``"auto"`` (CUDA, then MPS, then the CPU), ``"cpu"``, ``"cuda:N"``, ``"mps"``
            or a :class:`torch.device`.
        segment: chunk length in seconds; None takes the model's ``default_segment``; 0
            separates the whole song at once. When the model's default is the whole song,
            files longer than :data:`stemkit.inference.files.WHOLE_SONG_LIMIT` (10 minutes)
            are separated in segments of ``LONG_SONG_SEGMENT`` (1 minute) instead, to keep
            memory bounded; arrays given to :meth:`separate` always go through whole.
        overlap: overlap of neighbouring chunks as a fraction of the segment, 0 to 0.5.
        shifts: shift trick: average this many predictions on randomly delayed copies.
        batch_size: chunks per model call; None takes the model's ``default_batch_size``.
        seed: seed of the shift delays (None: not reproducible).
        progress: show a progress bar over the chunks on stderr.
        on_progress: called as ``on_progress(done, total)`` chunks while a song is separated
            (the web service's progress bars).

    Raises:
        StemkitError: a bad setting or device, or an oracle model (it needs the true stems).
    """

    def __init__(
        self,
        model: SeparationModel,
        *,
        name: str = "model",
        device: str | torch.device = "auto",
        segment: float | None = None,
        overlap: float = 0.25,
        shifts: int = 0,
        batch_size: int | None = None,
        seed: int | None = None,
        progress: bool = False,
        on_progress: Callable[[int, int], object] | None = None,
    ) -> None:
        import torch

        from stemkit.inference import check_settings
        from stemkit.inference.files import WHOLE_SONG_LIMIT
        from stemkit.runtime import resolve_device

        if model.requires_references:
            raise StemkitError(
                f"{name} is an oracle: it needs the true stems, which a song to separate does "
                f"not have; score it with `stemkit evaluate --model {name} --data DIR`"
            )
        chosen = model.default_segment if segment is None else (segment or None)
        if batch_size is None:
            batch_size = model.default_batch_size
        try:
            check_settings(chosen, overlap, batch_size, shifts)
        except ValueError as error:
            raise StemkitError(str(error)) from None
        self.model = model.eval()
        self.name = name
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.segment = chosen
        # Files of a whole-song model (by default, not by asking for segment 0) longer than
        # this are cut into long segments, so that memory stays bounded on any length.
        self.whole_song_limit = WHOLE_SONG_LIMIT if segment is None else None
        self.overlap = overlap
        self.shifts = shifts
        self.batch_size = batch_size
        self.progress = progress
        self.on_progress = on_progress
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)
        #: what the last :meth:`separate_to_folder` cost: ``audio_seconds`` and the measured
        #: span (:meth:`stemkit.energy.Meter.record`); None before the first
        self.last_cost: dict[str, Any] | None = None
        #: measures each song with CodeCarbon too when set (:class:`stemkit.energy.CodeCarbon`)
        self.codecarbon: CodeCarbon | None = None
        logger.debug(
            "%s on %s: segment %s, overlap %g, shifts %d, batch size %d",
            name, self.device, "the whole song" if chosen is None else f"{chosen:g} s",
            overlap, shifts, batch_size,
        )  # fmt: skip

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str] = "default",
        device: str | torch.device = "auto",
        segment: float | None = None,
        overlap: float = 0.25,
        shifts: int = 0,
        *,
        random_weights: bool = False,
        engine: Literal["torch", "onnxruntime"] = "torch",
        **settings: Any,
    ) -> Separator:
        """Load a checkpoint file, a bundled model (``"default"``) or ``"identity"``.

        Args:
            name_or_path: what ``stemkit separate --model`` takes.
            device, segment, overlap, shifts: as for :class:`Separator`.
            random_weights: allow a registered architecture without trained weights (its
                stems are noise: for tests and timing only).
            engine: ``"torch"``, or ``"onnxruntime"``: the network exported to ONNX (cached in
                the user cache, keyed by its weights; see :mod:`stemkit.artifacts.onnx`) and run
                by onnxruntime on the CPU (``device`` must be ``"auto"`` or ``"cpu"``).
            settings: ``batch_size``, ``seed``, ``progress``, ``on_progress``.

        Raises:
            StemkitError: an unknown name, an unusable checkpoint, an architecture without
                trained weights (unless ``random_weights``), an oracle, a bad setting, or a
                network that does not export to ONNX (``engine="onnxruntime"``).
        """
        from stemkit import artifacts

        name = os.fspath(name_or_path)
        untrained = is_untrained(name, random_weights=random_weights) and not random_weights
        # a registry name builds without any download; oracles are refused below, with their
        # own reason
        model = artifacts.load_model(name, random_weights=random_weights or untrained)
        if untrained and not model.requires_references:
            raise StemkitError(
                f"{name!r} has no trained weights: it would separate with random ones and "
                "give noise; load a bundled model (default) or a checkpoint file, or pass "
                "random_weights=True to separate with random weights anyway (for testing)"
            )
        if engine == "onnxruntime":
            from stemkit.artifacts.onnx import onnxruntime_model

            if device != "auto" and str(device).strip().lower() != "cpu":
                raise StemkitError(f"engine onnxruntime runs on the CPU, not on {device}")
            device = "cpu"
            # random weights are exported into a temporary folder, not cached
            model = onnxruntime_model(
                model, cache=not is_untrained(name, random_weights=random_weights)
            )
        elif engine != "torch":
            raise StemkitError(f"engine {engine!r}: use torch or onnxruntime")
        return cls(
            model, name=name, device=device, segment=segment, overlap=overlap, shifts=shifts,
            **settings,
        )  # fmt: skip

    @property
    def sources(self) -> tuple[str, ...]:
        """Names of the stems, in the model's order."""
        return tuple(self.model.sources)

    @property
    def sample_rate(self) -> int:
        """The rate the model works at, in Hz (songs at other rates are resampled)."""
        return int(self.model.sample_rate)

    @property
    def audio_channels(self) -> int:
        """The channel count the model takes (mono is spread to it)."""
        return int(self.model.audio_channels)

    def separate(
        self, audio: ArrayT, sample_rate: int, *, downmix: bool = False
    ) -> dict[str, ArrayT]:
        """Separate a signal held in memory.

        Args:
            audio: a numpy array or torch tensor, ``(time,)`` or ``(channels, time)``, float.
            sample_rate: its rate in Hz; it is resampled to :attr:`sample_rate` and back.
            downmix: average more channels than the model takes (e.g. 5.1) instead of
                refusing them.

        Returns:
            stem name → signal of the same type, shape, dtype (and device) as ``audio``, in
            the order of :attr:`sources`.

        Raises:
            StemkitError: a bad shape, rate or channel count, or a signal the model cannot
                take (e.g. shorter than its STFT window).
        """
        import numpy as np
        import torch

        from stemkit.audio import match_channels, resample

        if int(sample_rate) != sample_rate or sample_rate <= 0:
            raise StemkitError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        given: Any = audio  # numpy or torch: its dtype and device come back with the stems
        is_numpy = isinstance(given, np.ndarray)
        tensor = torch.from_numpy(np.ascontiguousarray(given)) if is_numpy else given
        if not isinstance(tensor, torch.Tensor):
            raise StemkitError(f"audio must be a numpy array or a torch tensor, not {type(audio)}")
        shape = tuple(tensor.shape)
        if tensor.ndim not in (1, 2) or shape[-1] == 0:
            raise StemkitError(f"audio must be (time,) or (channels, time), got shape {shape}")
        if tensor.ndim == 2 and shape[0] > shape[1]:
            raise StemkitError(
                f"audio must be (channels, time), got shape {shape}; if it is (time, channels), "
                "as soundfile reads it, pass audio.T"
            )
        if not (tensor.is_floating_point()):
            raise StemkitError(f"audio must hold floats in [-1, 1], got {tensor.dtype}")
        signal = tensor.detach().to("cpu", torch.float32)
        signal = signal[None] if signal.ndim == 1 else signal
        nb_channels, nb_samples = signal.shape
        try:
            mixture = match_channels(signal, self.audio_channels, downmix=downmix)
        except ValueError as error:
            raise StemkitError(f"audio {shape}: {error}") from None
        if not torch.isfinite(mixture).all():
            raise StemkitError("audio holds NaN or infinite samples")
        rate = int(sample_rate)
        try:
            stems = self._separate(resample(mixture, rate, self.sample_rate))
        except ValueError as error:
            raise StemkitError(
                f"audio {shape} cannot be separated by {self.name}: {error}"
            ) from None
        result: dict[str, Any] = {}
        for name, stem in zip(self.sources, stems, strict=True):
            stem = _at_rate(stem, self.sample_rate, rate, nb_samples)
            if stem.shape[0] != nb_channels:
                # Back to the caller's channels: mono asked for mono, a downmix is copied out.
                stem = stem.mean(dim=0, keepdim=True).expand(nb_channels, -1)
            stem = stem.contiguous().reshape(shape)
            if is_numpy:
                result[name] = stem.numpy().astype(given.dtype, copy=False)
            else:
                result[name] = stem.to(device=given.device, dtype=given.dtype)
        return result

    def separate_file(
        self,
        path: str | os.PathLike[str],
        out_dir: str | os.PathLike[str],
        format: str = "wav",
        stems: Sequence[str] | None = None,
        two_stems: str | None = None,
        *,
        force: bool = False,
        downmix: bool = False,
        filename: str = "{track}/{stem}.{ext}",
    ) -> list[Path]:
        """Separate an audio file into the folder ``out_dir/<song>/``, as ``stemkit separate``.

        The folder is written all or nothing with stemkit's marker file (see
        :mod:`stemkit.outputs`): an existing folder is never replaced unless ``force`` and
        stemkit wrote it.

        Args:
            path: any file soundfile or ffmpeg decodes.
            out_dir: the output root, created if needed.
            format: wav (16-bit), flac (16-bit), mp3 (320 kbit/s), ogg or opus.
            stems: the stems to write (default: all).
            two_stems: write this stem and ``no_<stem>``, the mixture minus it (karaoke).
            force: replace a folder stemkit wrote before.
            downmix: average songs with more channels than the model takes.
            filename: where the stems go (:class:`stemkit.outputs.FileNames`): ``{track}``
                (the song's name) in the folder, ``{stem}`` and ``{ext}`` in the file name.

        Returns:
            The files written, in the order of the stems.

        Raises:
            StemkitError: a bad option or song name, an unreadable song, an output folder
                that exists or cannot be written (:class:`~stemkit.outputs.OutputError`).
        """
        from stemkit import outputs

        settings = StemFiles.of(format)
        names = outputs.FileNames(filename)
        song = Path(path)
        root = Path(out_dir)
        name = names.folder(outputs.folder_name(song))
        outputs.prepare_root(root)
        for leftover in outputs.clean_leftovers(root):
            logger.warning("cleaned up %s, left by an interrupted run", leftover)
        destination = outputs.destination(root, name)
        outputs.check_destination(destination, force=force)
        return self.separate_to_folder(
            song,
            destination,
            output=settings,
            stems=stems,
            two_stems=two_stems,
            force=force,
            downmix=downmix,
            names=names,
        )

    def separate_to_folder(
        self,
        song: Path,
        destination: Path,
        *,
        output: StemFiles | None = None,
        stems: Sequence[str] | None = None,
        two_stems: str | None = None,
        force: bool = False,
        downmix: bool = False,
        names: FileNames | None = None,
    ) -> list[Path]:
        """Read ``song``, separate it and write its stems as the folder ``destination``.

        The lower half of :meth:`separate_file`, for callers that name and check the
        destination themselves (``destination`` from :func:`stemkit.outputs.destination`,
        in a root prepared by :func:`stemkit.outputs.prepare_root`); ``names`` names the
        files in it (default ``<stem>.<ext>``).

        Raises:
            AudioError: the song cannot be read or separated, or a stem cannot be encoded.
            OutputError: the destination is taken or the file system refused a write.
            StemkitError: unknown stems.
        """
        from stemkit import outputs
        from stemkit.audio.blocks import BlockReader
        from stemkit.energy import Meter
        from stemkit.inference.files import StemFile, stream_stems

        output = output or StemFiles()
        names = names or outputs.FileNames()
        track = outputs.folder_name(song)
        selected = self.selection(stems, two_stems)
        model = self.model_for(two_stems)
        with BlockReader(song, channels=self.audio_channels, downmix=downmix) as reader:
            song_rate = reader.sample_rate
            logger.debug("read %s: %d Hz, %d samples", song, song_rate, reader.frames)
            rate = output.rate_for(song_rate, self.sample_rate)
            sources = list(model.sources)
            if two_stems is not None:
                index = sources.index(two_stems)
                targets = [(selected[0], index, False), (selected[1], index, True)]
            else:
                targets = [(name, sources.index(name), False) for name in selected]
            files = [names.file(track, name, output.extension) for name, _, _ in targets]
            info = {
                "song": os.path.abspath(song),
                "model": self.name,
                "stems": selected,
                "sample_rate": rate,
            }

            def fill(folder: Path) -> None:
                stem_files = [
                    StemFile(folder / file, index, complement)
                    for file, (_, index, complement) in zip(files, targets, strict=True)
                ]
                try:
                    with Meter(codecarbon=self.codecarbon) as meter:
                        stream_stems(
                            reader,
                            self._stream_separate(reader.frames / song_rate, model),
                            stem_files,
                            model_rate=self.sample_rate,
                            rate=rate,
                            subtype=output.subtype,
                            clip=output.clip,
                            bitrate=output.bitrate,
                        )
                    # read, separated and encoded: what using the model cost for this song,
                    # recorded in the marker (written after this) and kept for the caller
                    self.last_cost = {"audio_seconds": reader.frames / song_rate, **meter.record()}
                    info["cost"] = self.last_cost
                except ValueError as error:
                    # The settings were checked when the separator was made, so the model
                    # refuses this song itself, e.g. one shorter than its STFT window.
                    failure = AudioError(song, f"cannot be separated by {self.name}: {error}")
                    raise _SongFailed(failure) from None
                except AudioError as error:
                    if error.path != str(reader.path):
                        raise  # a stem file: the folder writer names it under the destination
                    raise _SongFailed(error) from error

            try:
                _write_folder(destination, fill, force=force, info=info)
            except _SongFailed as failed:
                # Decoding failed half-way (the partial folder is gone): the song's own error,
                # not one of the folder's.
                raise failed.error from failed.error.__cause__
        return [destination / file for file in files]

    def selection(self, stems: Sequence[str] | None, two_stems: str | None) -> list[str]:
        """The stem names a folder gets: ``stems`` (default: all the model gives), or
        ``[two_stems, "no_" + two_stems]``.

        Raises:
            StemkitError: both given, or a name the model does not give.
        """
        sources = list(self.sources)
        if two_stems is not None:
            if stems is not None:
                raise StemkitError("stems and two_stems exclude each other; choose one")
            if two_stems not in sources:
                raise StemkitError(
                    f"two_stems {two_stems!r}: this model gives {', '.join(sources)}"
                )
            return [two_stems, f"no_{two_stems}"]
        if stems is None:
            return sources
        if isinstance(stems, str):
            stems = [stems]
        unknown = [name for name in stems if name not in sources]
        if unknown or not stems:
            raise StemkitError(
                f"unknown stem(s) {', '.join(unknown) or '(none given)'}; "
                f"this model gives {', '.join(sources)}"
            )
        return list(dict.fromkeys(stems))

    def model_for(self, two_stems: str | None) -> SeparationModel:
        """The model that computes the stems: for a two-stem split, the model's lighter
        version that runs only the network of ``two_stems`` where it has one
        (:meth:`~stemkit.models.base.SeparationModel.isolate`), else the whole model."""
        if two_stems is None:
            return self.model
        isolated = self.model.isolate(two_stems)
        if isolated is None:
            return self.model
        logger.debug("%s: computing %s only", self.name, two_stems)
        return isolated

    def _stream_separate(
        self, seconds: float, model: SeparationModel
    ) -> Callable[[Iterable[Tensor], int | None], Iterator[Tensor]]:
        """Block-wise separation with ``model`` of a song of about ``seconds`` (see
        :func:`stemkit.inference.blockwise.separate_blocks`): the same settings as
        :meth:`_separate`, except that a whole-song model cuts a song longer than
        :attr:`whole_song_limit` into long segments
        (:func:`stemkit.inference.files.file_segment`)."""
        from stemkit.inference.blockwise import separate_blocks
        from stemkit.inference.files import file_segment

        segment = file_segment(self.segment, seconds, self.whole_song_limit)
        if segment != self.segment:
            logger.info(
                "%s: %.0f s is longer than %g s; separating in segments of %g s to bound memory",
                self.name, seconds, self.whole_song_limit, segment,
            )  # fmt: skip

        def run(blocks: Iterable[Tensor], total: int | None) -> Iterator[Tensor]:
            return separate_blocks(
                model,
                blocks,
                segment=segment,
                overlap=self.overlap,
                batch_size=self.batch_size,
                shifts=self.shifts,
                device=self.device,
                progress=self.progress,
                generator=self.generator,
                total=total,
                on_progress=self.on_progress,
            )

        return run

    def _separate(self, mixture: Tensor, model: SeparationModel | None = None) -> Tensor:
        """``(channels, time)`` at the model's rate → ``(sources, channels, time)`` of
        ``model`` (default: the separator's)."""
        from stemkit.inference import separate

        return separate(
            self.model if model is None else model,
            mixture,
            segment=self.segment,
            overlap=self.overlap,
            batch_size=self.batch_size,
            shifts=self.shifts,
            device=self.device,
            progress=self.progress,
            generator=self.generator,
            on_progress=self.on_progress,
        )

    def __repr__(self) -> str:
        return (
            f"Separator({self.name!r}, sources={list(self.sources)}, "
            f"sample_rate={self.sample_rate}, device={str(self.device)!r})"
        )


class _SongFailed(Exception):
    """Carries an error of the song (not of its stem files) out of the stem-folder writer,
    which would otherwise name it under the destination."""

    def __init__(self, error: AudioError) -> None:
        super().__init__(str(error))
        self.error = error


def _at_rate(signal: Tensor, rate: int, wanted: int, frames: int | None) -> Tensor:
    """``signal`` resampled from ``rate`` to ``wanted`` Hz; at the song's own rate, cut or
    padded to its ``frames`` (the round trip through the model's rate may differ by one)."""
    import torch

    from stemkit.audio import resample

    if wanted == rate:
        return signal
    out = resample(signal, rate, wanted)
    if frames is not None and out.shape[-1] != frames:
        out = out[..., :frames]
        if out.shape[-1] < frames:
            out = torch.nn.functional.pad(out, (0, frames - out.shape[-1]))
    return out


def _write_folder(
    destination: Path,
    fill: Callable[[Path], object],
    *,
    force: bool,
    info: dict[str, Any],
) -> None:
    """Write the stem folder ``destination`` all or nothing: ``fill`` writes the stem files
    into the partial folder it is given (see :func:`stemkit.outputs.write_stem_folder`).

    Raises:
        OutputError: the destination is taken or the file system refused a write.
        AudioError: a stem cannot be encoded.
    """
    from stemkit import audio, outputs

    def write(folder: Path) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", audio.ClippingWarning)
            fill(folder)
        for warning in caught:
            # Name the file where the user will find it, not in the hidden partial folder.
            logger.warning("%s", str(warning.message).replace(str(folder), str(destination)))

    outputs.write_stem_folder(destination, write, force=force, info=info)
