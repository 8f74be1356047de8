"""Audio files in and out: read any supported format, resample, fix channels, write atomically.

Signals are float32 tensors ``(channels, time)``.
"""

from stemkit.audio.convert import match_channels, resample
from stemkit.audio.io import (
    FFMPEG_EXTENSIONS,
    READ_EXTENSIONS,
    SOUNDFILE_EXTENSIONS,
    WRITE_SUBTYPES,
    AudioInfo,
    ClippingWarning,
    audio_info,
    read_audio,
    write_audio,
)

__all__ = [
    "FFMPEG_EXTENSIONS",
    "READ_EXTENSIONS",
    "SOUNDFILE_EXTENSIONS",
    "WRITE_SUBTYPES",
    "AudioInfo",
    "ClippingWarning",
    "audio_info",
    "match_channels",
    "read_audio",
    "resample",
    "write_audio",
]
