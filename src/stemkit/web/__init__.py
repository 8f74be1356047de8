"""The local web service: a REST API and a page over the same separation API as the CLI.

``stemkit serve`` runs it (:mod:`stemkit.cli.serve`); :func:`create_app` builds the FastAPI
application for a data folder. It needs the ``web`` extra (``pip install stemkit[web]``).
"""

from stemkit.web.app import WebConfig, create_app

__all__ = ["WebConfig", "create_app"]
