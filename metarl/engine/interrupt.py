"""Ctrl-C and SIGTERM as a request to stop cleanly.

    with StopRequest() as stop:
        while ...:
            update()
            if stop.requested:
                save a checkpoint; raise metarl.errors.Interrupted(...)

The first SIGINT or SIGTERM only sets ``requested`` (the loop finishes its update and saves); a second
SIGINT raises ``KeyboardInterrupt`` at once. Outside the main thread (where Python cannot install signal
handlers) it does nothing and ``requested`` stays False.
"""
from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    def __init__(self):
        self.requested = False
        self.signal_name = ""
        self._previous = {}

    @property
    def exit_code(self) -> int:
        return 143 if self.signal_name == "SIGTERM" else 130

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n[metarl] {self.signal_name}: stopping after this update and saving a checkpoint "
              "(Ctrl-C again to exit at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
