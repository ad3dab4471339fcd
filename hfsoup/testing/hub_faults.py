"""Faults the local Hub can inject, one request at a time (the `FaultHook` seam of `hub_server`).

`FailOnce` answers the first request matching a method and a path pattern with an error instead of running the
endpoint, then lets everything through. Set it at construction (`LocalHubServer(root, faults=FailOnce(...))`) or on
a running server (`server.faults = FailOnce(...)`). It is deliberately small: a general fault-injecting mode (delays,
drops, truncation, failure rates) is meant to build on the same seam.

Example:
    ```py
    >>> # Fail the commit of an upload after its LFS objects were accepted: the branch must not move.
    >>> server.faults = FailOnce("POST", "/api/models/*/commit/*", status=500)
    ```
"""

from __future__ import annotations

import fnmatch
import threading
from urllib.parse import unquote

from hfsoup.testing.hub_protocol import Request, Response, error_response
from hfsoup.testing.hub_store import EndpointError


class FailOnce:
    """Answer the first `method` request whose unquoted path matches `pattern` (fnmatch) with `status`.

    Args:
        method (`str`): the HTTP method to fail (`POST`, `PUT`, ...).
        pattern (`str`): an fnmatch pattern over the unquoted path, e.g. `/api/models/*/commit/*`.
        status (`int`, *optional*, defaults to 500): the status answered.
        message (`str`, *optional*): the error message in the JSON body.

    Attributes:
        fired (`list[str]`): the paths failed so far (at most one).
    """

    def __init__(self, method: str, pattern: str, *, status: int = 500, message: str | None = None) -> None:
        self.method = method.upper()
        self.pattern = pattern
        self.status = status
        self.message = message or "Injected fault (hfsoup.testing.hub_faults.FailOnce)"
        self.fired: list[str] = []
        self._lock = threading.Lock()

    def before(self, request: Request) -> Response | None:
        path = unquote(request.path)
        if request.method != self.method or not fnmatch.fnmatchcase(path, self.pattern):
            return None
        with self._lock:
            if self.fired:
                return None
            self.fired.append(path)
        return error_response(EndpointError(self.status, self.message))

    def after(self, request: Request, response: Response) -> Response:
        return response
