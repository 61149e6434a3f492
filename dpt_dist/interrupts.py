"""SIGINT (Ctrl-C) and SIGTERM (SLURM pre-emption, a scheduler's kill; torchrun passes either on
to every rank) turned into an orderly stop. Standard library only: the CLI installs it before
its heavy imports, so even an interrupt during start-up ends in one line, not a traceback.
"""

from __future__ import annotations

import signal
import time
from contextlib import contextmanager

# Launchers pass a signal on: under torchrun a Ctrl-C reaches every rank from the terminal and
# again from torchrun a moment later. A repeat this soon is the same request, not an insistence.
REPEAT_WINDOW_S = 5.0


class Interrupted(BaseException):
    """A SIGINT / SIGTERM outside the training loop (set-up, the final test): stop at once. A
    BaseException, like KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, signum: int, phase: str):
        super().__init__(f"{signal.Signals(signum).name} during {phase}")
        self.signum, self.phase = signum, phase


class StopRequest:
    """SIGINT (Ctrl-C) and SIGTERM (SLURM pre-emption; torchrun passes either on to every rank).
    Inside the training loop (`deferred`) the first one only asks for a stop: the current step
    finishes, every rank agrees at the end of it, a checkpoint is written, and the run returns
    status "interrupted". Anywhere else, or a second signal (later than REPEAT_WINDOW_S after the
    first), interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self.phase = "set-up"  # where the run is, for the message of an immediate interrupt
        self._defer = False
        self._previous: dict = {}
        self._first_at = 0.0

    def _handle(self, signum, frame) -> None:
        repeat = self.signum is not None and time.monotonic() - self._first_at < REPEAT_WINDOW_S
        if self.signum is None:
            self.signum, self._first_at = signum, time.monotonic()  # no logging: the code may hold its lock
        if self._defer or repeat:
            return
        raise Interrupted(signum, self.phase)

    def check(self) -> None:
        """Raise Interrupted if a signal came: a library that catches every exception may have
        swallowed the one the handler raised (set-up calls this between its phases)."""
        if self.signum is not None:
            raise Interrupted(self.signum, self.phase)

    @contextmanager
    def installed(self):
        outer = getattr(signal.getsignal(signal.SIGINT), "__self__", None)
        if isinstance(outer, StopRequest) and outer.signum is not None:  # a signal the caller's handler took
            self.signum, self._first_at = outer.signum, outer._first_at
        self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)

    @contextmanager
    def deferred(self):
        self._defer = True
        try:
            yield
        finally:
            self._defer = False
