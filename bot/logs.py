"""The one logging set-up of every `pilot` process, workers included: level from $PILOT_LOG (default INFO)."""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging() -> None:
    level = os.environ.get("PILOT_LOG", "INFO").upper()
    logging.basicConfig(level=level, format=FORMAT, datefmt="%H:%M:%S")
