"""Big jobs: the manifest of a catalogue (:mod:`~stemkit.cluster.manifest`) and the Ray
worker pool that runs it over many processes and machines (:mod:`~stemkit.cluster.pool`,
which alone imports Ray, and only when a job asks for it)."""
