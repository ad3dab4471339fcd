"""A command run with its stderr on a terminal, as a person sees it: every line and every bar redraw, timed.

tqdm draws bars only on a terminal as wide as some columns, and redraws them with carriage returns; so the command's
stderr is a pseudo-terminal 160 columns wide, read as it is written, and every `\\r` or `\\n` ends an update.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass
class TerminalRun:
    """`code` the exit status, `updates` every stderr update as (seconds since the start, text without control
    sequences), the last one `(end, "<exit>")`, `stdout` the standard output."""

    code: int
    updates: list[tuple[float, str]]
    stdout: str

    @property
    def lines(self) -> list[str]:
        return [text for _, text in self.updates if text != "<exit>"]

    @property
    def longest_silence(self) -> float:
        """The longest stretch, in seconds, with no line and no bar update (the start and the exit included)."""
        times = [0.0] + [t for t, _ in self.updates]
        return max(b - a for a, b in zip(times, times[1:], strict=False))


def run_in_terminal(argv: Sequence[str], env: Mapping[str, str], *, timeout: float = 600) -> TerminalRun:
    """Run `argv` with `env` (used as given), stderr on a pseudo-terminal and stdout on a pipe."""
    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 0 columns would draw no bar
    start = time.monotonic()
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=terminal, env={**env, "PYTHONUNBUFFERED": "1"})
    os.close(terminal)
    updates: list[tuple[float, str]] = []

    def read() -> None:
        text = b""
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the child closed the terminal: it has exited
                break
            if not chunk:
                break
            text += chunk
            *done, text = re.split(rb"[\r\n]", text)
            now = time.monotonic() - start
            updates.extend((now, plain) for plain in map(_plain, done) if plain)
        if _plain(text):
            updates.append((time.monotonic() - start, _plain(text)))

    reader = threading.Thread(target=read)
    reader.start()
    out = proc.stdout.read().decode()  # type: ignore[union-attr]
    code = proc.wait(timeout=timeout)
    reader.join(timeout=60)
    os.close(main)
    updates.append((time.monotonic() - start, "<exit>"))
    return TerminalRun(code, updates, out)


def _plain(raw: bytes) -> str:
    """A terminal's text without its control sequences (tqdm moves the cursor to redraw several bars), and without
    the spaces tqdm.write blanks a bar with before the line it writes."""
    return re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw.decode(errors="replace")).strip()
