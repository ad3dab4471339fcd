"""A local Hub started in one call, for notebooks and interactive sessions.

`LocalHubServer` and `use_local_hub` are context managers, and a notebook cannot hold a `with` block open across
cells. `start_local_hub` enters both and returns a handle; `close()` (or the end of the process) stops the server and
puts the Hugging Face clients back as they were.

The server demands a token for writes, as the Hub does, and accepts only the handle's: a random one for this session
that may write to every namespace, and is never printed (use `hub.token` where you would pass your own Hub token).

Example:
    ```py
    >>> import hfsoup
    >>> from hfsoup.testing.sandbox import start_local_hub
    >>> hub = start_local_hub("work")
    >>> hfsoup.push("soup/", "me/my-soup", token=hub.token)
    >>> hub.close()
    ```
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..localhub.access import ANY_NAMESPACE, HubUser, new_token
from ..localhub.protocol import LOCAL_USER
from ..localhub.server import LocalHubServer
from .env import use_local_hub


@dataclass
class LocalHub:
    """A running local Hub with every Hugging Face client of this process pointed at it.

    Attributes:
        url (`str`): the server's address (also `HF_ENDPOINT` while it runs).
        root (`Path`): the working folder: the repos under `root / "hub"`, the client cache under `root / "hf_home"`.
        token (`str`): the server's one token, random and never shown; it may write to every namespace.
    """

    url: str
    root: Path
    token: str = field(repr=False)
    _stack: contextlib.ExitStack = field(repr=False)

    @property
    def store(self) -> Path:
        """Where the server keeps its repos (a server started again on it serves the same repos)."""
        return self.root / "hub"

    def api(self):
        """An `HfApi` client for this server that writes with `token`."""
        from huggingface_hub import HfApi

        return HfApi(endpoint=self.url, token=self.token)

    def close(self) -> None:
        """Stop the server and point the clients back where they were. Safe to call twice."""
        self._stack.close()

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def _no_progress_bars():
    import datasets
    import huggingface_hub.utils as hub_utils
    from transformers.utils import logging as transformers_logging

    switches = [  # (is it off?, turn it off, turn it on)
        (hub_utils.are_progress_bars_disabled, hub_utils.disable_progress_bars, hub_utils.enable_progress_bars),
        (
            lambda: not datasets.is_progress_bar_enabled(),
            datasets.disable_progress_bars,
            datasets.enable_progress_bars,
        ),
        (
            lambda: not transformers_logging.is_progress_bar_enabled(),
            transformers_logging.disable_progress_bar,
            transformers_logging.enable_progress_bar,
        ),
    ]
    were_off = [is_off() for is_off, _, _ in switches]
    for _, off, _ in switches:
        off()
    try:
        yield
    finally:
        for was_off, (_, _, on) in zip(were_off, switches, strict=True):
            if not was_off:
                on()


def start_local_hub(
    workdir: str | os.PathLike, *, require_write_token: bool = True, progress_bars: bool = True
) -> LocalHub:
    """Start a local Hub on a free loopback port, keeping its repos and the client cache under `workdir`.

    Args:
        workdir (`str` or `os.PathLike`):
            The folder for the repos (`hub/`) and the Hugging Face cache (`hf_home/`); created if needed. A hub
            started again on the same folder serves the repos pushed before.
        require_write_token (`bool`, *optional*, defaults to `True`):
            Refuse writes without `token`, as the Hub does; `False` takes them from anyone (a throwaway store).
        progress_bars (`bool`, *optional*, defaults to `True`):
            With `False`, the progress bars of `huggingface_hub` (hfsoup's too), `datasets` and `transformers` are
            off until `close()`: with tiny models every step takes a blink and the bars would only be noise.

    Returns:
        `LocalHub`: the running server; call `close()` when done.
    """
    root = Path(workdir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()
    try:
        token = new_token()
        tokens = {token: HubUser(LOCAL_USER, (ANY_NAMESPACE,))}
        server = stack.enter_context(
            LocalHubServer(root / "hub", tokens=tokens, anonymous_writes=not require_write_token)
        )
        stack.enter_context(use_local_hub(server.url, root / "hf_home"))
        if not progress_bars:
            stack.enter_context(_no_progress_bars())
    except BaseException:
        stack.close()
        raise
    atexit.register(stack.close)
    return LocalHub(server.url, root, token, stack)


__all__ = ["LocalHub", "start_local_hub"]
