"""Graceful shutdown for streamed turns under uvicorn (prototype of the hook for api.py).

On SIGTERM (or a first Ctrl+C) the app starts *draining* while uvicorn keeps its listener open:

1. `admit()` refuses new turns (the route answers 503 `shutting_down` + Retry-After);
2. running turns get `grace` seconds to finish on their own;
3. then every turn still running is told to stop (its `on_stop` callback); it ends its stream
   with an `error` frame (`server_restarting`) and `data: [DONE]`, saving what it produced;
4. only then is uvicorn told to exit (`server.should_exit = True`): it closes the listener,
   closes the now idle connections, runs the lifespan shutdown and the process exits 0.

A second SIGINT skips what is left of the grace (and, once the streams are ended, sets uvicorn's
`force_exit`). If uvicorn starts exiting by some other route (code setting `should_exit`, as the
test harness does), the drain starts then too, but uvicorn has already closed its listener.

Install from the lifespan startup: `drain.install()`; undo in its `finally`: `drain.uninstall()`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from sse_starlette.sse import AppStatus

from townhall.errors import ShuttingDownError

logger = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Once our streams are ended, uvicorn waits for the remaining connections; if the operator set no
# --timeout-graceful-shutdown (None: wait forever), bound that wait so a stuck request cannot
# keep the process alive past the orchestrator's kill.
AFTER_DRAIN_TIMEOUT = 5


def uvicorn_server(handler: Any) -> Any | None:
    """The uvicorn `Server` whose bound `handle_exit` is installed as this signal handler.

    uvicorn installs `signal.signal(sig, self.handle_exit)` in `Server.capture_signals()` before it
    imports the app; sse-starlette may have replaced `Server.handle_exit` on the class (its
    `AppStatus.handle_exit`), but the bound method's `__self__` is the Server either way."""
    owner = getattr(handler, "__self__", None)
    if owner is not None and hasattr(owner, "should_exit") and hasattr(owner, "force_exit"):
        return owner
    return None


class Drain:
    def __init__(self, grace: float, *, retry_after: int = 5, finish_timeout: float = 5.0):
        self.grace = grace
        self.retry_after = retry_after
        self.finish_timeout = finish_timeout  # for stopped turns to write their last frames
        self.draining = False
        self.began_at: float | None = None
        self._turns: dict[int, Callable[[], None]] = {}
        self._ids = iter(range(1 << 62))
        self._idle = asyncio.Event()  # no turn running (asyncio.Event binds its loop lazily)
        self._idle.set()
        self._force = asyncio.Event()  # a second SIGINT: skip the rest of the grace
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any | None = None
        self._previous: dict[int, Any] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # --- wiring ---------------------------------------------------------------------------

    def install(self) -> bool:
        """Take over SIGTERM/SIGINT from uvicorn. Call in the lifespan startup. Returns whether a
        uvicorn server was found (without one, nothing is changed: tests driving the app over
        ASGI keep their own signal handlers)."""
        self._loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return False
        server = uvicorn_server(signal.getsignal(signal.SIGTERM))
        if server is None:
            logger.info("not served by uvicorn's signal handling: no graceful drain on SIGTERM")
            return False
        self._server = server
        # sse-starlette would otherwise cancel every EventSourceResponse as soon as it sees
        # uvicorn's should_exit (or its own AppStatus.should_exit), without a last frame.
        AppStatus.disable_automatic_graceful_drain()
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)
        self._spawn(self._watch_server())
        logger.info("graceful drain armed: grace %.1fs", self.grace)
        return True

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous)
        self._previous.clear()
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- turns ----------------------------------------------------------------------------

    def admit(self) -> None:
        """Raise if no new turn may start (the caller maps it to 503 shutting_down)."""
        if self.draining:
            raise ShuttingDownError(self.retry_after)

    def track(self, on_stop: Callable[[], None]) -> Callable[[], None]:
        """Track one admitted turn; `on_stop` is called (on the loop) when the grace is over.
        Returns the release function (idempotent): call it however the response ends, also from
        a BackgroundTask for a client that left before the body started. It does not re-check
        admission: a turn admitted just before the drain began (an await in between) still runs."""
        key = next(self._ids)
        self._turns[key] = on_stop
        self._idle.clear()

        def release() -> None:
            if self._turns.pop(key, None) is not None and not self._turns:
                self._idle.set()

        return release

    @property
    def live(self) -> int:
        return len(self._turns)

    # --- shutdown -------------------------------------------------------------------------

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        # A Python-level handler runs between two bytecodes of the main thread, maybe in the
        # middle of a loop callback: only hand the work to the loop.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._signalled, sig)

    def _signalled(self, sig: int) -> None:
        name = signal.Signals(sig).name
        if not self.draining:
            logger.info("%s: draining %d turn(s), grace %.1fs", name, self.live, self.grace)
            self.begin()
        elif sig == signal.SIGINT:
            logger.warning("second SIGINT: ending the remaining turns now")
            self._force.set()
            if not self._turns and self._server is not None:
                self._server.force_exit = True

    def begin(self) -> None:
        if self.draining:
            return
        self.draining = True
        assert self._loop is not None
        self.began_at = self._loop.time()
        self._spawn(self._drain())

    async def _drain(self) -> None:
        if self._turns and self.grace > 0:
            waits = [asyncio.ensure_future(e.wait()) for e in (self._idle, self._force)]
            try:
                await asyncio.wait(waits, timeout=self.grace, return_when="FIRST_COMPLETED")
            finally:
                for w in waits:
                    w.cancel()
        if self._turns:
            logger.warning("grace over: ending %d running turn(s)", len(self._turns))
            for on_stop in list(self._turns.values()):
                try:
                    on_stop()
                except Exception:
                    logger.exception("stopping a turn failed")
            try:
                await asyncio.wait_for(self._idle.wait(), self.finish_timeout)
            except TimeoutError:
                logger.error("%d turn(s) did not end within %.1fs", self.live, self.finish_timeout)
        self._exit()

    def _exit(self) -> None:
        server = self._server
        if server is None:
            return
        if server.config.timeout_graceful_shutdown is None:
            server.config.timeout_graceful_shutdown = AFTER_DRAIN_TIMEOUT
        # Not server.handle_exit(): that records the signal, which uvicorn re-raises after
        # serve() returns (exit status -SIGTERM); and sse-starlette's patched handle_exit would
        # set AppStatus.should_exit. Setting the flag is uvicorn's documented programmatic exit.
        server.should_exit = True

    async def _watch_server(self) -> None:
        """uvicorn may start exiting without our signal handler (code setting should_exit)."""
        while not self.draining:
            if self._server is not None and self._server.should_exit:
                logger.info("uvicorn is exiting: draining %d turn(s)", self.live)
                self.begin()
                return
            await asyncio.sleep(0.1)
