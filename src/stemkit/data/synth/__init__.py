"""Built-in synthetic multitrack songs: deterministic 4-stem data in the MUSDB18-HQ layout.

Songs are composed from a seed (:mod:`~stemkit.data.synth.compose`), rendered per stem with
FluidSynth and a General MIDI soundfont (:mod:`~stemkit.data.synth.render`) and written with an
exact integer mixture (:mod:`~stemkit.data.synth.generate`). Needs ``pip install
'stemkit[data]'`` and the FluidSynth library.
"""

from __future__ import annotations

from stemkit.data.synth.generate import GENERATOR_VERSION, synthesize, track_name, track_seed

__all__ = ["GENERATOR_VERSION", "synthesize", "track_name", "track_seed"]
