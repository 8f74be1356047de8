"""The named models stemkit knows: what each is, what it was trained on, how it scored, and
where its weights come from.

One entry per name (:data:`CATALOGUE`). Its weights are one of:

* :class:`Bundled`: shipped inside stemkit (``weights/``), used as is;
* :class:`Fetchable`: published files with a known hash; :mod:`stemkit.artifacts.fetch`
  downloads them once, checks the hash, converts them into a stemkit checkpoint and keeps that
  in the cache, so later runs need no network;
* :class:`NotFetchable`: published somewhere, but either without a hash to check them against
  or in a form our architectures cannot load yet; the entry says which, and what to do (for
  X-UMX: fetch the file by hand and ``stemkit models import-xumx`` it).

Parameter counts are stored rather than computed (building the large models takes seconds and
hundreds of megabytes); ``tests/integration/test_fetch_weights.py`` checks them against the
built architectures. Scores are the published ones, from reference/spec-notes.md and
reference/published-tables.md, each with its metric and test set named.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from stemkit.errors import StemkitError

__all__ = [
    "ALL_STEMS",
    "CATALOGUE",
    "Bundled",
    "CatalogueEntry",
    "Fetchable",
    "NotFetchable",
    "Score",
    "WeightFile",
    "get_entry",
]

#: The MUSDB18 convention (DESIGN.md, Metrics): BSS Eval v4 SDR on 1 s frames, median over
#: frames, then median over tracks.
CSDR = "cSDR (BSS Eval v4 SDR, median over 1 s frames, then over tracks)"
#: The MDX convention: one SNR per track, mean over tracks.
USDR = "uSDR (one SDR per track, mean over tracks)"

#: What torch.hub checks for the Open-Unmix files, and so what we check.
HUB_PREFIX_NOTE = (
    "the file name ends in the first 8 hex digits of the file's SHA-256, the hash torch.hub "
    "checks (check_hash=True); that prefix is the expected hash"
)


#: :attr:`WeightFile.target` of a file that holds every stem (a whole model).
ALL_STEMS = "all stems"


@dataclass(frozen=True)
class WeightFile:
    """One published weights file.

    Attributes:
        url: where it is published.
        sha256: its SHA-256 as hex: all 64 digits, or the published prefix.
        target: the stem it holds (Open-Unmix publishes one file per target);
            :data:`ALL_STEMS` for a file holding the whole model.
    """

    url: str
    sha256: str
    target: str

    @property
    def filename(self) -> str:
        """The last part of the URL's path."""
        return urlsplit(self.url).path.rsplit("/", 1)[-1]

    @property
    def hash_is_prefix(self) -> bool:
        """Whether only a prefix of the SHA-256 is published."""
        return len(self.sha256) < 64

    def matches(self, digest: str) -> bool:
        """Whether the full hex ``digest`` of a download is the published one."""
        return digest.lower().startswith(self.sha256.lower())

    def expected(self) -> str:
        """The expected hash in words, e.g. ``"sha256 b62c91ce… (published prefix)"``."""
        if self.hash_is_prefix:
            return f"sha256 {self.sha256}… (published prefix)"
        return f"sha256 {self.sha256}"


@dataclass(frozen=True)
class Score:
    """A published score.

    Attributes:
        metric: what the number is (:data:`CSDR`, :data:`USDR`, ...).
        test_set: what it was measured on.
        per_stem: ``(stem, dB)`` pairs as published.
        reference: where it was published.
        average: the published average, when one is; else :attr:`mean` computes it.
    """

    metric: str
    test_set: str
    per_stem: tuple[tuple[str, float], ...]
    reference: str
    average: float | None = None

    @property
    def mean(self) -> float:
        """The published average, else the mean over the published stems, in dB."""
        if self.average is not None:
            return self.average
        return sum(value for _, value in self.per_stem) / len(self.per_stem)

    def short(self) -> str:
        """E.g. ``"cSDR 5.33 dB, MUSDB18 test"`` (the metric's short name and the mean)."""
        return f"{self.metric.split(' ')[0]} {self.mean:.2f} dB, {self.test_set}"


@dataclass(frozen=True)
class Bundled:
    """Weights shipped with stemkit: the key of :data:`stemkit.artifacts.bundled.BUNDLED`."""

    bundled_name: str


@dataclass(frozen=True)
class Fetchable:
    """Published files with known hashes, and how they become one stemkit checkpoint.

    Attributes:
        files: the files, one per stem for Open-Unmix, in stem order.
        converter: ``"openunmix"`` (:func:`stemkit.artifacts.openunmix.import_openunmix`) or
            ``"demucs-v1"`` (:func:`stemkit.artifacts.demucs_v1.import_demucs_v1`, one file).
        options: keyword arguments of the converter (rate, hop, ...) beyond the files.
        hash_note: how the hash is published.
    """

    files: tuple[WeightFile, ...]
    converter: str = "openunmix"
    options: Mapping[str, Any] = field(default_factory=dict)
    hash_note: str = HUB_PREFIX_NOTE

    def fingerprint(self) -> str:
        """12 hex digits naming this set of files and options (the cache file name has it,
        so a changed entry is fetched anew rather than served from an old file)."""
        text = "\n".join(
            [f"{f.target} {f.url} {f.sha256}" for f in self.files]
            + [self.converter, *(f"{k}={v!r}" for k, v in sorted(self.options.items()))]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class NotFetchable:
    """Weights that stemkit cannot fetch by name (yet).

    Attributes:
        published: where the weights are published (URL and hash when known).
        reason: why they are not fetched: no hash to verify them, or they do not load into
            our architecture; and what the user can do instead.
        by_hand: the ``stemkit models import-...`` line for the file fetched by hand, if any.
    """

    published: str
    reason: str
    by_hand: str = ""


WeightSource = Bundled | Fetchable | NotFetchable


@dataclass(frozen=True)
class CatalogueEntry:
    """One named model.

    Attributes:
        name: what ``--model`` takes.
        title: the system and variant in words.
        system: registry model name; ``kwargs`` its constructor arguments.
        stems: output stems, in order.
        sample_rate: in Hz.
        parameters: trainable parameters of the built model; ``None`` if not recorded.
        trained_on: the training data.
        score: the published score, ``None`` if none is recorded.
        weights: where the weights come from.
        licence: of the weights, when it restricts their use.
        note: how running them in stemkit differs from upstream, when it does.
    """

    name: str
    title: str
    system: str
    kwargs: Mapping[str, Any]
    stems: tuple[str, ...]
    sample_rate: int
    parameters: int | None
    trained_on: str
    score: Score | None
    weights: WeightSource
    licence: str | None = None
    note: str | None = None

    @property
    def status(self) -> str:
        """``bundled``, ``fetchable`` or ``not fetchable`` (the cache is not consulted)."""
        if isinstance(self.weights, Bundled):
            return "bundled"
        if isinstance(self.weights, Fetchable):
            return "fetchable"
        return "not fetchable"

    def import_command(self) -> str:
        """The ``stemkit models import-...`` line for files fetched by hand ("" if none)."""
        if isinstance(self.weights, NotFetchable):
            return self.weights.by_hand
        if not isinstance(self.weights, Fetchable):
            return ""
        if self.weights.converter == "demucs-v1":
            (file,) = self.weights.files
            return f"stemkit models import-demucs-v1 {file.filename} -o {self.name}.pt"
        files = " ".join(f.filename for f in self.weights.files)
        options = ""
        if [f.target for f in self.weights.files] != [
            _strip_hash(f.filename) for f in self.weights.files
        ]:
            options += " --targets " + " ".join(f.target for f in self.weights.files)
        for key in ("sample_rate", "n_hop"):
            if key in self.weights.options:
                options += f" --{key.replace('_', '-')} {self.weights.options[key]}"
        return f"stemkit models import-openunmix {files}{options} -o {self.name}.pt"


def _strip_hash(filename: str) -> str:
    from stemkit.artifacts.openunmix.files import target_name

    return target_name(filename)


MUSDB = ("vocals", "drums", "bass", "other")
DEMUCS_ORDER = ("drums", "bass", "other", "vocals")

UMX_README = "Open-Unmix README (reference/spec-notes.md §2.6)"
UMX_TEST = "MUSDB18 test"


def _umx_score(vocals: float, drums: float, bass: float, other: float) -> Score:
    return Score(
        CSDR,
        UMX_TEST,
        (("vocals", vocals), ("drums", drums), ("bass", bass), ("other", other)),
        UMX_README,
    )


def _umx_files(record: str, names: Mapping[str, str]) -> tuple[WeightFile, ...]:
    """Open-Unmix's Zenodo files; ``names`` maps each stem to its file's hash suffix."""
    return tuple(
        WeightFile(
            url=f"https://zenodo.org/records/{record}/files/{stem}-{suffix}.pth",
            sha256=suffix,
            target=stem,
        )
        for stem, suffix in names.items()
    )


def _umx_kwargs(hidden: int, **extra: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "sources": list(MUSDB),
        "hidden_size": hidden,
        "n_fft": 4096,
        "n_hop": 1024,
        "bandwidth": 16000.0,
        "niter": 1,
    }
    return {**kwargs, **extra}


#: How the Open-Unmix music models are converted: rate and hop as upstream's factory functions
#: set them (the 2019 files record the rate, the hop nowhere), one Wiener EM iteration.
_UMX_OPTIONS = {"sample_rate": 44100, "n_hop": 1024, "niter": 1}

_DEMUCS_V1_HASH = (
    "the full SHA-256 the v1 release's demucs/separate.py (PRETRAINED_MODELS) checks; the file "
    "is a pickled whole model, read without running it (stemkit.artifacts.pickled_modules)"
)
_DEMUCS_V1_NOTE = (
    "same layers and weights as the release (strict load), the input standardised by its mono "
    "mean and standard deviation as the release's separate.py does; differences: stemkit "
    "standardises each chunk it separates (15 s, overlapping) by that chunk's statistics plus "
    "1e-5 on the deviation, where separate.py standardises the whole track once and then "
    "separates independent 10 s chunks; no random shifts (separate.py's default, --shifts 0)"
)
_TASNET_V1_NOTE = (
    _DEMUCS_V1_NOTE + "; as the release, the last partial frame of a chunk is dropped and its "
    "< 10 samples are silent (pad_end=False)"
)


def _demucs_v1_files(file: str, sha256: str) -> Fetchable:
    return Fetchable(
        (WeightFile(f"https://dl.fbaipublicfiles.com/demucs/{file}", sha256, ALL_STEMS),),
        converter="demucs-v1",
        hash_note=_DEMUCS_V1_HASH,
    )


def _demucs_score(
    vocals: float, drums: float, bass: float, other: float, average: float, what: str
) -> Score:
    return Score(
        CSDR,
        "MUSDB18 test",
        (("vocals", vocals), ("drums", drums), ("bass", bass), ("other", other)),
        f"{what}, mean of 5 seeds, recomputed from the evaluation JSONs stored in the Demucs "
        "v1 repository (reference/spec-notes.md §5)",
        average,
    )


_ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="default",
        title="Open-Unmix umx-synthmix-small (stemkit's own; has heard no real recording)",
        system="umx",
        kwargs={"sources": list(MUSDB), "hidden_size": 96, "niter": 1},
        stems=MUSDB,
        sample_rate=44100,
        parameters=3_524_752,
        trained_on="generated songs only (stemkit data synth, 76 songs, no real recording)",
        score=Score(
            USDR,
            "stemkit generator held-out split (10 songs, unseen soundfont, voices, effects)",
            (("vocals", 4.84), ("drums", 5.55), ("bass", 5.51), ("other", 4.04)),
            "its model card, artifacts/weights/umx-synthmix-small.md",
        ),
        weights=Bundled("default"),
    ),
    CatalogueEntry(
        name="umxhq",
        title="Open-Unmix UMX-HQ",
        system="umx",
        kwargs=_umx_kwargs(512),
        stems=MUSDB,
        sample_rate=44100,
        parameters=35_573_392,
        trained_on="MUSDB18-HQ",
        score=_umx_score(vocals=6.25, drums=6.04, bass=5.07, other=4.28),
        weights=Fetchable(
            _umx_files(
                "3370489",
                {
                    "vocals": "b62c91ce",
                    "drums": "9619578f",
                    "bass": "8d85a5bd",
                    "other": "b52fbbf7",
                },
            ),
            options=_UMX_OPTIONS,
        ),
    ),
    CatalogueEntry(
        name="umx",
        title="Open-Unmix UMX",
        system="umx",
        kwargs=_umx_kwargs(512),
        stems=MUSDB,
        sample_rate=44100,
        parameters=35_573_392,
        trained_on="MUSDB18 (AAC)",
        score=_umx_score(vocals=6.32, drums=5.73, bass=5.23, other=4.02),
        weights=Fetchable(
            _umx_files(
                "3370486",
                {
                    "vocals": "c8df74a5",
                    "drums": "5a48008b",
                    "bass": "646024d3",
                    "other": "f8e132cc",
                },
            ),
            options=_UMX_OPTIONS,
        ),
    ),
    CatalogueEntry(
        name="umxl",
        title="Open-Unmix UMX-L",
        system="umx",
        kwargs=_umx_kwargs(1024),
        stems=MUSDB,
        sample_rate=44100,
        parameters=113_028_752,
        trained_on="private ~400 h of multitracks",
        score=_umx_score(vocals=7.21, drums=7.15, bass=6.02, other=4.89),
        weights=Fetchable(
            _umx_files(
                "5069601",
                {
                    "vocals": "bccbd9aa",
                    "drums": "69e0ebd4",
                    "bass": "2ca1ce51",
                    "other": "c8c5b3e6",
                },
            ),
            options=_UMX_OPTIONS,
        ),
        licence="CC BY-NC-SA 4.0 (non-commercial)",
    ),
    CatalogueEntry(
        name="umxse",
        title="Open-Unmix UMX-SE (speech enhancement)",
        system="umx",
        kwargs={
            "sources": ["speech", "noise"],
            "hidden_size": 256,
            "sample_rate": 16000,
            "audio_channels": 1,
            "n_fft": 1024,
            "n_hop": 512,
            "bandwidth": 16000.0,
            "niter": 1,
        },
        stems=("speech", "noise"),
        sample_rate=16000,
        parameters=3_167_244,
        trained_on="Voicebank+DEMAND (28 speakers)",
        score=None,
        weights=Fetchable(
            (
                WeightFile(
                    "https://zenodo.org/records/3786908/files/speech_f5e0d9f9.pth",
                    "f5e0d9f9",
                    "speech",
                ),
                WeightFile(
                    "https://zenodo.org/records/3786908/files/noise_04a6fc2d.pth",
                    "04a6fc2d",
                    "noise",
                ),
            ),
            options={"sample_rate": 16000, "n_hop": 512, "niter": 1},
            hash_note=(
                "the file name ends in _<8 hex digits>, by Open-Unmix's convention the first 8 "
                "hex digits of the file's SHA-256; torch.hub does not check it (its pattern "
                "needs a '-'), we do"
            ),
        ),
    ),
    CatalogueEntry(
        name="xumx-musdb18",
        title="X-UMX (CrossNet-Open-Unmix), asteroid's MUSDB18 model",
        system="xumx",
        kwargs={"sources": ["bass", "drums", "vocals", "other"]},
        stems=("bass", "drums", "vocals", "other"),
        sample_rate=44100,
        parameters=35_573_392,
        trained_on="MUSDB18",
        score=Score(
            CSDR,
            "MUSDB18 test",
            (("vocals", 6.612), ("drums", 6.471), ("bass", 5.426), ("other", 4.639)),
            "asteroid's X-UMX recipe README (reference/spec-notes.md §3)",
        ),
        weights=NotFetchable(
            published="https://zenodo.org/record/4704231/files/pretrained_xumx.pth (listed in "
            "asteroid 0.7.0's hub_utils; no hash published)",
            reason="no published hash to verify the download against; download it by hand, "
            "check it as you see fit, and convert it with `stemkit models import-xumx "
            "pretrained_xumx.pth -o xumx-musdb18.pt`, then --model xumx-musdb18.pt",
            by_hand="stemkit models import-xumx pretrained_xumx.pth -o xumx-musdb18.pt",
        ),
        note="run with one Wiener EM iteration, as the recipe's eval.py separates (niter 1)",
    ),
    CatalogueEntry(
        name="demucs-v1",
        title="Demucs v1 (C1=100)",
        system="demucs",
        kwargs={"sources": list(DEMUCS_ORDER)},
        stems=DEMUCS_ORDER,
        sample_rate=44100,
        parameters=648_548_208,
        trained_on="MUSDB18",
        score=_demucs_score(6.29, 6.08, 5.83, 4.12, 5.58, "Demucs"),
        weights=_demucs_v1_files(
            "demucs.th",
            "b25b32a4772e43983d2e30cce17a85aaa1baf3aea0a6145eb591b0f393ac9312",
        ),
        note=_DEMUCS_V1_NOTE,
    ),
    CatalogueEntry(
        name="demucs-v1-extra",
        title="Demucs v1 (C1=100), with extra training data",
        system="demucs",
        kwargs={"sources": list(DEMUCS_ORDER)},
        stems=DEMUCS_ORDER,
        sample_rate=44100,
        parameters=648_548_208,
        trained_on="MUSDB18 + extra multitracks",
        score=_demucs_score(7.05, 7.08, 6.70, 4.47, 6.33, "Demucs with extra data"),
        weights=_demucs_v1_files(
            "demucs_extra.th",
            "099d3e7fcbb8da7484184ad6d84cd6c3820947ff0e2f52d5e622365685037cd7",
        ),
        note=_DEMUCS_V1_NOTE,
    ),
    CatalogueEntry(
        name="tasnet-v1",
        title="Conv-TasNet for music (Demucs v1 repository, X=10)",
        system="convtasnet",
        kwargs={"sources": list(DEMUCS_ORDER), "X": 10, "normalize": True, "pad_end": False},
        stems=DEMUCS_ORDER,
        sample_rate=44100,
        parameters=10_977_872,
        trained_on="MUSDB18",
        score=_demucs_score(6.81, 6.08, 5.66, 4.37, 5.73, "Conv-TasNet"),
        weights=_demucs_v1_files(
            "tasnet.th",
            "d037cdbad294f1a7152af8742d8419c305e244810381a795ffcd22b8593360d8",
        ),
        note=_TASNET_V1_NOTE,
    ),
    CatalogueEntry(
        name="tasnet-v1-extra",
        title="Conv-TasNet for music (Demucs v1 repository, X=10), with extra training data",
        system="convtasnet",
        kwargs={"sources": list(DEMUCS_ORDER), "X": 10, "normalize": True, "pad_end": False},
        stems=DEMUCS_ORDER,
        sample_rate=44100,
        parameters=10_977_872,
        trained_on="MUSDB18 + extra multitracks",
        score=_demucs_score(6.74, 7.11, 7.00, 4.44, 6.32, "Conv-TasNet with extra data"),
        weights=_demucs_v1_files(
            "tasnet_extra.th",
            "4a91ade51439ac41bb1914753c3aebd839eed17981379e6142478bcfa3a5461f",
        ),
        note=_TASNET_V1_NOTE,
    ),
    CatalogueEntry(
        name="bsrnn-replication",
        title="BSRNN, the open replication (oBSRNN)",
        system="bsrnn",
        kwargs={},
        stems=MUSDB,
        sample_rate=44100,
        parameters=None,
        trained_on="MUSDB18-HQ",
        score=None,
        weights=NotFetchable(
            "the replication's checkpoints are on Zenodo, record 17516442 (file names and "
            "hashes not recorded here); the original authors published none",
            "no recorded file list or hash to verify a download against; their Lightning "
            "checkpoints convert by hand (the same tensors as stemkit's bsrnn, outputs equal to "
            "the replication's code within float rounding: bench/results/speed.md), or train "
            "one with `stemkit train` (configs/ has the replication's presets)",
            "stemkit models import-obsrnn vocals.ckpt bass.ckpt drums.ckpt other.ckpt "
            "-o bsrnn-opt.pt",
        ),
    ),
)

#: Every named model, by name, in listing order.
CATALOGUE: dict[str, CatalogueEntry] = {entry.name: entry for entry in _ENTRIES}


def get_entry(name: str) -> CatalogueEntry:
    """The catalogue entry called ``name``.

    Raises:
        StemkitError: no entry has that name (the message lists them).
    """
    try:
        return CATALOGUE[name]
    except KeyError:
        raise StemkitError(
            f"no model {name!r} in the catalogue; known: {', '.join(CATALOGUE)}"
        ) from None
