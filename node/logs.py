"""Logging for a running node: key=value lines to HOME/node.log and to stderr."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from .home import LOG_FILE

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure_logging(home: Path, level: str = "INFO") -> None:
    home.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.setLevel(level.upper())
    formatter = logging.Formatter(FORMAT)
    for handler in (logging.FileHandler(home / LOG_FILE), logging.StreamHandler(sys.stderr)):
        handler.setFormatter(formatter)
        root.addHandler(handler)
    # py-libp2p logs every dropped or rejected message at WARNING; keep our log readable.
    logging.getLogger("libp2p").setLevel(max(logging.WARNING, root.level))
    # ... and every failed dial at ERROR (a peer not up yet, a restarting validator);
    # the Raft transport and bootstrap report their own dial failures with context.
    logging.getLogger("libp2p.transport.tcp.tcp").setLevel(logging.CRITICAL)
