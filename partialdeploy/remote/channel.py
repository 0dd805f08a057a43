"""The device side's line protocol (stdlib only; inside the zipapp): answers are JSON lines on stdout
prefixed with ``@@partialdeploy``; ``STOP`` is set when the local side asks the job to stop."""

from __future__ import annotations

import json
import sys
import threading

PREFIX = "@@partialdeploy "
EXPORT_DIR = "export"  # where the pushed files live, below the job's temporary folder
STOP = threading.Event()
DONE = threading.Event()
_OUT = threading.Lock()


def emit(event: str, **payload) -> None:
    line = PREFIX + json.dumps({"event": event, **payload}, default=str) + "\n"
    with _OUT:
        sys.stdout.write(line)
        sys.stdout.flush()
