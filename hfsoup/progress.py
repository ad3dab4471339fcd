"""What a person sees while hfsoup works: one line as each pipeline stage starts, and a progress bar for each step
that runs longer than a second.

Stage lines go to the `hfsoup.stage` logger at INFO. The CLI prints them as plain lines unless `-q`; the library is
quiet by default, like every logger here (configure `hfsoup` at INFO to see them). Bars are
`huggingface_hub.utils.tqdm`, so `HF_HUB_DISABLE_PROGRESS_BARS=1` and `-q` turn them off; each shows only once its
step has run for `HFSOUP_PROGRESS_DELAY` seconds (1 by default), so a quick step leaves nothing but its stage's line
and a terminal is not flooded with bars that flash by.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .constants import progress_delay

#: The stage lines' logger: the CLI gives it a plain handler of its own (no level or module name in front).
STAGE_LOGGER = "hfsoup.stage"

#: The `huggingface_hub` progress-bar group of hfsoup's own bars: the CLI keeps it on at the default verbosity while
#: the libraries' bars (transformers loading weights, datasets tokenizing) are off, as they are steps of a stage.
BARS = "hfsoup"

_stages = logging.getLogger(STAGE_LOGGER)


def stage(message: str, *args: object) -> None:
    """Say that a pipeline stage starts (`"Scoring 4 ingredients on sst2"`): one line, printed by the CLI unless -q."""
    _stages.info(message, *args)


def bar(iterable: Iterable | None = None, *, desc: str, total: float | None = None, unit: str = "it", **kwargs: Any):  # noqa: ANN201 - a tqdm
    """A progress bar through `huggingface_hub.utils.tqdm` that shows once its step has run for a second and is
    cleared when it ends (the stage lines stay: they are the record). Use it as a context manager or an iterable."""
    from huggingface_hub.utils import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, total=total, unit=unit, delay=progress_delay(), name=BARS, **kwargs)


def download_bar_class(name: str) -> type:
    """A `tqdm_class` for `snapshot_download` that draws one bar per ingredient: the bytes written, under the
    ingredient's name. `huggingface_hub` opens three bars per snapshot (files counted, bytes received, bytes
    written); the other two add nothing a person needs beside it, so they are not drawn."""
    from huggingface_hub.utils import tqdm

    class DownloadBar(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if kwargs.get("name") == "huggingface_hub.snapshot_download":  # the bytes written, summed over files
                kwargs["desc"] = f"Downloading {name}"
                kwargs["name"] = BARS
            else:
                kwargs["disable"] = True
            kwargs.setdefault("delay", progress_delay())
            kwargs["leave"] = False
            super().__init__(*args, **kwargs)

        def refresh(self, *args: Any, **kwargs: Any) -> None:
            # huggingface_hub refreshes as files are added, which would draw the bar before its delay: not yet.
            if self.disable or self._time() - getattr(self, "start_t", self._time()) < self.delay:
                return
            super().refresh(*args, **kwargs)

        def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
            """huggingface_hub renames the bar ("Reconstruction complete") when the snapshot is complete, and leaves
            it open, to be redrawn under every later line: the rename is where it is done, so it closes here."""
            self.close()

    return DownloadBar


def estimate(seconds: float) -> str:
    """A duration as people say it: `"40 s"`, `"3 min"`, `"1.5 h"`."""
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["BARS", "STAGE_LOGGER", "bar", "download_bar_class", "estimate", "stage"]
