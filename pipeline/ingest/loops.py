"""The event loop each network front (HTTP, syslog/RELP) runs on its own thread.

Both fronts open their listeners on a fresh loop, serve until stopped, then close what they
opened; an error while opening is raised in the caller's thread, with the loop closed, so
that a listener that cannot bind fails ``start()`` instead of a thread dying unseen."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["call_on_loop", "new_loop", "serve_in_thread", "stop_loop_thread"]

log = logging.getLogger("pipeline.ingest")


def log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # into the structured log, never as a raw traceback on stderr
    exc = context.get("exception")
    log.error("ingest: event loop error", extra={"error": context.get("message"),
                                                 "exception": type(exc).__name__ if exc else None},
              exc_info=exc if isinstance(exc, BaseException) else None)


def new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(log_loop_exception)
    return loop


def serve_in_thread(loop: asyncio.AbstractEventLoop, name: str, open_: Callable[[], Awaitable[None]],
                    close: Callable[[], Awaitable[None]]) -> threading.Thread:
    """Run ``open_()`` on ``loop`` in a new daemon thread, then the loop until it is stopped,
    then ``close()``.  Returns once ``open_()`` finished; re-raises its exception here."""
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(open_())
        except BaseException as exc:
            failure.append(exc)
            loop.close()
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(close())
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait()
    if failure:
        raise failure[0]
    return thread


def call_on_loop(loop: asyncio.AbstractEventLoop | None, coro: Any, timeout: float) -> None:
    """Run ``coro`` on ``loop`` from another thread and wait up to ``timeout`` s; a loop that
    is gone (never started, or stopped) means there is nothing left to do."""
    if loop is None or loop.is_closed():
        coro.close()
        return
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    with contextlib.suppress(Exception):
        fut.result(timeout)


def stop_loop_thread(loop: asyncio.AbstractEventLoop | None, thread: threading.Thread | None, close: Any,
                     timeout: float) -> None:
    """Run the ``close`` coroutine on ``loop`` (up to ``timeout`` s), stop the loop and join
    its thread: the end of ``serve_in_thread``."""
    if loop is not None and not loop.is_closed():
        call_on_loop(loop, close, timeout)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
    else:
        close.close()
    if thread is not None:
        thread.join(timeout=max(0.1, timeout))
