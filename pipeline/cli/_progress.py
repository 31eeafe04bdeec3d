"""Progress bars for long verbs (verify, verify-tier, export, restore, ship).

A bar with count, rate and ETA (tqdm) on standard error, and only when standard error is a
terminal and the verb is not printing JSON: piped or captured output, and every ``--json``
document, stay byte for byte what they were without a bar.  The bar is cleared when the
work ends, so the verb's own report follows on a clean line.  Verbs call ``advance`` /
``add_total`` (or ``phase`` for verify-tier's callback) whatever the mode: a disabled bar
does nothing, so no call site needs its own "is this a terminal" test.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType
from typing import IO, Any

from tqdm import tqdm


def wants_bar(stream: IO[str] | None = None, *, json: bool = False) -> bool:
    """The one rule: a bar only on a terminal, never with ``--json``."""
    stream = sys.stderr if stream is None else stream
    if json:
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


class Progress:
    """Counts units of work (segments, bytes) towards a total that may grow while the work
    runs (streams are listed one at a time).  Thread-safe: verify-tier and ship report from
    worker threads."""

    def __init__(self, desc: str, *, unit: str = "seg", enabled: bool, unit_scale: bool = False) -> None:
        self._lock = threading.Lock()
        self._bar: tqdm[Any] | None = None
        if enabled:
            # total=0 would draw "0/0"; None shows count and rate until a total is known
            self._bar = tqdm(desc=desc, total=None, unit=unit, unit_scale=unit_scale, leave=False,
                             file=sys.stderr, dynamic_ncols=True, mininterval=0.1)

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def add_total(self, n: int) -> None:
        if self._bar is None or n <= 0:
            return
        with self._lock:
            self._bar.total = (self._bar.total or 0) + n
            self._bar.refresh()

    def advance(self, n: int = 1) -> None:
        if self._bar is None:
            return
        with self._lock:
            self._bar.update(n)

    def phase(self, name: str, done: int, total: int) -> None:
        """verify-tier's callback shape: the phase, work done and total so far."""
        if self._bar is None:
            return
        with self._lock:
            bar = self._bar
            changed = bar.desc != name or bar.total != max(total, done)
            bar.set_description_str(name, refresh=False)
            bar.total = max(total, done)
            bar.update(done - bar.n)
            if changed:  # a new phase or total is drawn at once, whatever the rate limit
                bar.refresh()

    def note(self, message: str) -> None:
        """A line for the operator on stderr, printed above the bar when there is one (a
        plain print would be overwritten by the bar's next redraw)."""
        if self._bar is None:
            print(message, file=sys.stderr)
            return
        with self._lock:
            self._bar.write(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is None:
            return
        with self._lock:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def progress_bar(desc: str, *, json: bool = False, unit: str = "seg", unit_scale: bool = False) -> Progress:
    """A bar for this verb's run, enabled by ``wants_bar``."""
    return Progress(desc, unit=unit, unit_scale=unit_scale, enabled=wants_bar(json=json))
