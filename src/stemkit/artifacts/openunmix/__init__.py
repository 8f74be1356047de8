"""Open-Unmix's published weights (one ``.pth`` per target) → a stemkit ``umx`` checkpoint.

:mod:`~stemkit.artifacts.openunmix.files` reads and checks one upstream file;
:mod:`~stemkit.artifacts.openunmix.convert` writes a set of them as one checkpoint.
"""

from stemkit.artifacts.openunmix.convert import DEFAULT_SAMPLE_RATE, import_openunmix
from stemkit.artifacts.openunmix.files import (
    LEGACY_KEYS,
    OpenUnmixWeights,
    load_openunmix_target,
    read_openunmix_target,
    target_name,
)

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "LEGACY_KEYS",
    "OpenUnmixWeights",
    "import_openunmix",
    "load_openunmix_target",
    "read_openunmix_target",
    "target_name",
]
