"""Graceful shutdown of a worker: SIGTERM starts a drain instead of closing the door at once.

Without it, uvicorn stops listening the moment the worker gets SIGTERM, so a client that
arrives during the grace period meets a closed or unanswered socket. With it:

1. on SIGTERM the worker starts **draining**: ``/readyz`` answers 503 and new inference
   requests get ``503`` with ``Retry-After`` and ``Connection: close`` (the guard asks
   :attr:`Drain.draining`), while the requests already in flight run to their answer;
2. once nothing is in flight and at least ``min_s`` has passed (time for a load balancer to
   see the 503s and route elsewhere), or after ``max_s`` whatever is left, the signal is handed
   to the server's own handler, which stops listening and exits.

A second SIGTERM hands over at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("vision.service")


class Drain:
    def __init__(self, min_s: float = 2.0, max_s: float = 30.0, poll_s: float = 0.05) -> None:
        self.min_s, self.max_s, self.poll_s = min_s, max_s, poll_s
        self.draining = False
        self.since: float | None = None
        self.in_flight: Callable[[], int] = lambda: 0  # set by whoever counts requests
        self._previous = None
        self._handed_over = threading.Event()

    @classmethod
    def from_env(cls) -> Drain:
        """``VISION_DRAIN_S`` (least seconds of 503s, default 2) and ``VISION_GRACE_S`` (most
        seconds waited for requests in flight, default 30)."""
        return cls(
            float(os.environ.get("VISION_DRAIN_S", "2")),
            float(os.environ.get("VISION_GRACE_S", "30")),
        )

    def install(self) -> bool:
        """Put the drain in front of the current SIGTERM handler (the server's). Only the main
        thread may set signal handlers: elsewhere nothing changes and False is returned."""
        if threading.current_thread() is not threading.main_thread():
            return False
        self._previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, self._on_term)
        return True

    def _on_term(self, sig: int, frame) -> None:
        if self._handed_over.is_set():  # sent by _hand_over from the drain thread
            if self._default_action():
                self._end(sig)
            return
        if self.draining:  # asked twice: stop waiting
            self._hand_over(sig)
            return
        self.draining, self.since = True, time.monotonic()
        logger.info(
            "SIGTERM: draining (%d in flight; new requests get 503 for at least %.1f s)",
            self.in_flight(),
            self.min_s,
        )
        threading.Thread(target=self._wait, args=(sig,), name="vision-drain", daemon=True).start()

    def done(self) -> bool:
        """Whether the drain may end: nothing in flight after ``min_s``, or ``max_s`` passed."""
        elapsed = time.monotonic() - self.since
        return elapsed >= self.max_s or (elapsed >= self.min_s and self.in_flight() <= 0)

    def _wait(self, sig: int) -> None:
        while not self.done():
            time.sleep(self.poll_s)
        logger.info("drained after %.1f s (%d in flight)", time.monotonic() - self.since,
                    self.in_flight())  # fmt: skip
        self._hand_over(sig)

    def _hand_over(self, sig: int) -> None:
        if self._handed_over.is_set():
            return
        self._handed_over.set()
        if callable(self._previous):
            self._previous(sig, None)
        elif not self._default_action():  # SIGTERM was ignored before the drain: so it stays
            return
        elif threading.current_thread() is threading.main_thread():
            self._end(sig)
        else:  # only the main thread may reset a handler: the signal takes it back there
            os.kill(os.getpid(), sig)

    def _default_action(self) -> bool:
        """Whether the handler before the drain was the default action (end the process)."""
        return not callable(self._previous) and self._previous != signal.SIG_IGN

    @staticmethod
    def _end(sig: int) -> None:
        """On the main thread: end the process by ``sig`` as if no handler had been set."""
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
