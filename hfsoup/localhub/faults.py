"""Fault injection for the local Hub: a per-request plan of failures, to prove what hfsoup does on a bad network.

A `FaultPlan` is the server's `faults` hook (see `hub_server.FaultHook`). Each rule matches requests by method, a
regex on the unquoted path and, optionally, the bearer token, and injects one kind of fault into the first `times`
matching requests (or into each with a `probability`, for soak runs); requests it does not match are served normally.

| kind | what the client sees |
|---|---|
| `status` | an error answer (`status`, default 503; optional `X-Error-Code` and message) instead of the endpoint's |
| `delay` | the answer only after `seconds` (set it past the client's timeout: `HF_HUB_DOWNLOAD_TIMEOUT`, ...) |
| `truncate` | the headers announce the whole body, `at` bytes of it come (default: half), then the connection drops |
| `corrupt` | the whole body, of the right length, with bytes changed (a checksum that does not match) |
| `drop` | the connection closes without an answer; for uploads (LFS `PUT`) after `at` bytes of the body were read |

Every fault injected is counted in `plan.injected` (by kind) and logged in `plan.log` as (kind, method, path).

Example:
    ```py
    >>> plan = FaultPlan()
    >>> plan.add("status", path=r"/resolve/.*\\.safetensors$", status=503, times=2)  # 503 twice, then success
    >>> plan.add("truncate", method="GET", path=r"model\\.safetensors$")
    >>> with LocalHubServer(root, faults=plan) as hub:
    ...     ...
    >>> plan.injected
    Counter({'status': 2, 'truncate': 1})
    ```
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import unquote

from .protocol import Request, Response, json_response

#: Every kind a rule may inject.
FAULT_KINDS = ("status", "delay", "truncate", "corrupt", "drop")
_BEFORE = {"status", "delay", "drop"}  # decided before the endpoint runs; the others rewrite its answer


@dataclass
class FaultRule:
    """One line of a `FaultPlan`: which requests, which fault, how many times."""

    kind: str
    method: str | None = None
    path: re.Pattern | None = None
    token: str | None = None
    times: int | None = 1  # None: no limit
    probability: float = 1.0
    status: int = 503
    error_code: str | None = None
    message: str = "Service temporarily unavailable (injected fault)"
    seconds: float = 0.0
    at: int | None = None
    skip: int = 0
    fired: int = 0
    seen: int = 0

    def matches(self, request: Request) -> bool:
        if self.times is not None and self.fired >= self.times:
            return False
        if self.method is not None and request.method != self.method:
            return False
        if self.token is not None and request.token != self.token:
            return False
        if self.path is not None and self.path.search(unquote(request.path)) is None:
            return False
        self.seen += 1
        return self.seen > self.skip


@dataclass
class FaultPlan:
    """The faults to inject, rule by rule; thread-safe (the server answers requests on many threads).

    Args:
        seed (`int`, *optional*, defaults to 0): seeds the draws of rules with a `probability` below 1.
    """

    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    injected: Counter = field(default_factory=Counter)
    log: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(self.seed)

    def add(
        self,
        kind: str,
        *,
        method: str | None = None,
        path: str | None = None,
        token: str | None = None,
        times: int | None = 1,
        probability: float = 1.0,
        status: int = 503,
        error_code: str | None = None,
        message: str | None = None,
        seconds: float = 0.0,
        at: int | None = None,
        skip: int = 0,
    ) -> FaultRule:
        """Add a rule; the first matching rule with faults left fires. See the module docstring for the kinds.

        Args:
            kind (`str`): `status`, `delay`, `truncate`, `corrupt` or `drop`.
            method (`str`, *optional*): only requests with this HTTP method (`GET`, `HEAD`, `PUT`, ...).
            path (`str`, *optional*): a regex searched in the unquoted request path.
            token (`str`, *optional*): only requests carrying this bearer token (an "expired" token, say).
            times (`int`, *optional*, defaults to 1): how many requests get the fault; `None` for all of them.
            probability (`float`, *optional*, defaults to 1.0): the chance that a matching request gets it.
            status (`int`, *optional*, defaults to 503), error_code (`str`), message (`str`): the `status` answer.
            seconds (`float`, *optional*): how long `delay` waits before the endpoint answers.
            at (`int`, *optional*): bytes sent (`truncate`) or read (`drop` of an upload) before the connection drops.
            skip (`int`, *optional*, defaults to 0): let this many matching requests through first (e.g. 1 to spare
                the header read that precedes a file's download).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"Unknown fault kind {kind!r}; expected one of {', '.join(FAULT_KINDS)}")
        rule = FaultRule(
            kind,
            method=method,
            path=re.compile(path) if path is not None else None,
            token=token,
            times=times,
            probability=probability,
            status=status,
            error_code=error_code,
            message=message or FaultRule.message,
            seconds=seconds,
            at=at,
            skip=skip,
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Forget every rule (the counts of faults already injected stay)."""
        with self._lock:
            self.rules.clear()

    @property
    def total(self) -> int:
        return sum(self.injected.values())

    def _fire(self, request: Request, kinds: set[str]) -> FaultRule | None:
        with self._lock:
            for rule in self.rules:
                if rule.kind in kinds and rule.matches(request):
                    if rule.probability < 1.0 and self._random.random() >= rule.probability:
                        continue
                    rule.fired += 1
                    self.injected[rule.kind] += 1
                    self.log.append((rule.kind, request.method, unquote(request.path)))
                    return rule
        return None

    # The server's hook ----------------------------------------------------------------------------------------------
    def before(self, request: Request) -> Response | None:
        rule = self._fire(request, _BEFORE)
        if rule is None:
            return None
        if rule.kind == "delay":
            time.sleep(rule.seconds)
            return None
        if rule.kind == "drop":
            if rule.at is not None:  # a streamed upload: take part of the body, then hang up
                remaining = rule.at
                while remaining > 0 and (chunk := request.read(min(remaining, 1 << 16))):
                    remaining -= len(chunk)
            raise ConnectionAbortedError("connection dropped (injected fault)")
        headers = {"X-Error-Message": rule.message}
        if rule.error_code:
            headers["X-Error-Code"] = rule.error_code
        return json_response({"error": rule.message}, rule.status, headers)

    def after(self, request: Request, response: Response) -> Response:
        if request.method != "GET" or response.status not in (200, 206) or response.length == 0:
            return response
        rule = self._fire(request, {"truncate", "corrupt"})
        if rule is None:
            return response
        if rule.kind == "truncate":
            cut = response.length // 2 if rule.at is None else min(rule.at, response.length - 1)
            return Response(response.status, response.body, response.headers, response.file, cut_after=cut)
        body = _body(response)
        middle = len(body) // 2
        flipped = bytes(b ^ 0xFF for b in body[middle : middle + 8])
        return Response(response.status, body[:middle] + flipped + body[middle + len(flipped) :], response.headers)


def _body(response: Response) -> bytes:
    if response.file is None:
        return response.body
    path, start, length = response.file
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)
