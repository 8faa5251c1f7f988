"""Progress for long work: a bar redrawn in place on a terminal, a few plain lines elsewhere.

On a terminal (stderr is a TTY) `bar` is a tqdm bar. Otherwise (make run's log, CI, DVC's
queue) a redrawn bar would come out as carriage-return fragments, so it prints a plain line
("evaluate: 1,200 of 4,000 img, 30%") at most every PLAIN_EVERY_S seconds and nothing for
work shorter than that: a quick stage adds no line to the log at all.
"""

import sys
import time

from tqdm import tqdm

PLAIN_EVERY_S = 15.0


class _Plain:
    """tqdm's update/close/set_postfix_str, as a few plain lines."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, 0
        self.postfix = ""
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last >= PLAIN_EVERY_S:
            self._last = time.monotonic()
            of = f" of {self.total:,} {self.unit}, {self.n / self.total:.0%}" if self.total else ""
            extra = f" ({self.postfix})" if self.postfix else ""
            print(f"{self.desc}: {self.n:,}{of}{extra}", file=sys.stderr, flush=True)

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Plain":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def bar(total: int | None, desc: str, unit: str = "img"):
    """A progress bar for `total` units of work (tqdm's interface: update, close, with)."""
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, mininterval=0.5, file=sys.stderr)
    return _Plain(total, desc, unit)


def say(line: str) -> None:
    """A step of long work, shown on a terminal only (the log gets the stage's one line)."""
    if sys.stderr.isatty():
        print(line, file=sys.stderr, flush=True)
