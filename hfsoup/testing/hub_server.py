"""A local, Hub-compatible HTTP server for tests, notebooks, the demo and air-gapped teams.

It speaks enough of the Hugging Face Hub protocol for the real clients (`huggingface_hub`, `transformers`,
`datasets`, `evaluate`) pointed at it through `HF_ENDPOINT` to create model, dataset and space repos, upload
(regular and LFS files), branch, tag, list and download. Repos persist under `root` (see `hub_store`), so a
server restarted on the same root serves the same repos. Stdlib only.

Uploads of LFS files must not go to Xet storage, which this server does not speak: set `HF_HUB_DISABLE_XET=1`
(`hfsoup.testing.env.use_local_hub` does).

Example:
    ```py
    >>> from huggingface_hub import HfApi
    >>> from hfsoup.testing.env import use_local_hub
    >>> with LocalHubServer("./hub-store") as hub, use_local_hub(hub.url, "./hf_home"):
    ...     HfApi().create_repo("org/tiny-bert")
    ```
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from hfsoup.errors import HfsoupError
from hfsoup.testing import hub_reads, hub_writes
from hfsoup.testing.hub_protocol import Request, Response, error_response
from hfsoup.testing.hub_store import EndpointError, HubStore

logger = logging.getLogger(__name__)

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_CHUNK = 1 << 20
_MAX_LINE = 65536
Endpoint = Callable[..., Response]

# (method, action after /api/{type}s/{namespace}/{name}) -> endpoint; it gets (request, type, id, *rest).
_REPO_API: dict[tuple[str, str | None], Endpoint] = {
    ("GET", None): hub_reads.repo_info,
    ("GET", "revision"): hub_reads.repo_info,
    ("GET", "tree"): hub_reads.tree,
    ("POST", "paths-info"): hub_reads.paths_info,
    ("GET", "refs"): hub_reads.refs,
    ("GET", "commits"): hub_reads.commits,
    ("POST", "branch"): hub_writes.create_branch,
    ("DELETE", "branch"): hub_writes.delete_branch,
    ("POST", "tag"): hub_writes.create_tag,
    ("DELETE", "tag"): hub_writes.delete_tag,
    ("PUT", "settings"): hub_writes.update_settings,
    ("POST", "preupload"): hub_writes.preupload,
    ("POST", "commit"): hub_writes.commit,
}
_NO_TAIL = {"refs", "settings", None}  # actions whose endpoint takes no trailing segments
_API: dict[tuple[str, str], Endpoint] = {
    ("GET", "whoami-v2"): hub_reads.whoami,
    ("POST", "repos/create"): hub_writes.create_repo,
    ("DELETE", "repos/delete"): hub_writes.delete_repo,
    ("POST", "validate-yaml"): hub_writes.validate_yaml,
}


class FaultHook(Protocol):
    """The seam for fault injection (500/503 then success, delays, truncated bodies, wrong checksums, drops).

    `before` sees every request once its body is read (streamed uploads: before it is read) and may answer it
    instead of the endpoint; `after` may replace any response. Raising `ConnectionAbortedError` from either drops
    the connection without an answer.
    """

    def before(self, request: Request) -> Response | None: ...

    def after(self, request: Request, response: Response) -> Response: ...


def route(method: str, path: str) -> tuple[Endpoint, list[Any], bool]:
    """The endpoint for `method path`, its arguments after the request, and whether it streams the request body."""
    segments = path.strip("/").split("/")
    if segments[0] == "api":
        rest = segments[1:]
        if (method, "/".join(rest)) in _API:
            return _API[(method, "/".join(rest))], [], False
        if len(rest) >= 3 and rest[0] in _REPO_TYPES:
            action, tail = (rest[3] if len(rest) > 3 else None), rest[4:]
            endpoint = _REPO_API.get((method, action))
            if endpoint is not None and not (action in _NO_TAIL and tail):
                args: list[Any] = [_REPO_TYPES[rest[0]], f"{unquote(rest[1])}/{unquote(rest[2])}"]
                return endpoint, args if action in _NO_TAIL else [*args, tail], False
    elif segments[0] == "_lfs" and len(segments) in (3, 4):
        if method == "PUT" and len(segments) == 3:
            return hub_writes.lfs_put, segments[1:], True
        if method == "POST" and segments[3:] == ["verify"]:
            return hub_writes.lfs_verify, segments[1:3], False
        if method in ("GET", "HEAD") and len(segments) == 3:
            return hub_writes.lfs_get, segments[1:], False
    else:
        repo_type = "model"
        if segments[0] in ("datasets", "spaces") and len(segments) >= 4:
            repo_type, segments = _REPO_TYPES[segments[0]], segments[1:]
        if len(segments) >= 4 and segments[2] == "resolve" and method in ("GET", "HEAD"):
            return (
                hub_reads.resolve,
                [repo_type, f"{unquote(segments[0])}/{unquote(segments[1])}", segments[3:]],
                False,
            )
        if segments[1:2] and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                return hub_writes.lfs_batch, [repo_type, f"{unquote(segments[0])}/{unquote(segments[1][:-4])}"], False
    raise EndpointError(404, f"No such endpoint: {method} {path}")


class _BodyReader:
    """Reads a request body framed by Content-Length or chunked transfer encoding, never past its end."""

    def __init__(self, rfile: IO[bytes], headers: Any) -> None:
        self.rfile = rfile
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        self.remaining = 0 if self.chunked else int(headers.get("Content-Length") or 0)
        self.finished = not self.chunked and self.remaining == 0

    def read(self, n: int = _CHUNK) -> bytes:
        if self.finished:
            return b""
        if self.chunked and self.remaining == 0:
            line = self.rfile.readline(_MAX_LINE)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise ConnectionAbortedError(f"malformed chunk size line {line[:40]!r}") from None
            if size == 0:
                while self.rfile.readline(_MAX_LINE).strip():  # trailers, up to the blank line
                    pass
                self.finished = True
                return b""
            self.remaining = size
        data = self.rfile.read(min(n, self.remaining))
        if not data:
            raise ConnectionAbortedError("client closed the connection in the middle of the request body")
        self.remaining -= len(data)
        if self.remaining == 0:
            if self.chunked:
                self.rfile.readline(_MAX_LINE)  # the CRLF after each chunk
            else:
                self.finished = True
        return data

    def read_all(self) -> bytes:
        return b"".join(iter(self.read, b""))


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one HTTP/1.1 request to its endpoint; keep-alive safe (the body is always read to its end)."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def _handle(self) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        reader = _BodyReader(self.rfile, self.headers)
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers=self.headers,
            store=hub.store,
            base_url=f"http://{self.headers.get('Host') or hub.url.split('://', 1)[1]}",
            token=(token.strip() or None) if scheme.lower() == "bearer" else None,
            page_size=hub.page_size,
            require_write_token=hub.require_write_token,
        )
        try:
            try:
                endpoint, args, streaming = route(self.command, url.path)
                if streaming:
                    request.read = reader.read
                else:
                    request.body = reader.read_all()
                response = hub.faults.before(request) if hub.faults else None
                response = response or endpoint(request, *args)
            except EndpointError as err:
                response = error_response(err)
            except (TimeoutError, ConnectionError):
                raise
            except Exception:
                logger.exception("local Hub: %s %s failed", self.command, url.path)
                response = error_response(EndpointError(500, "Internal error in the local Hub server (see its log)"))
            reader.read_all()  # Whatever the endpoint left unread would corrupt the next request on this connection.
            if hub.faults:
                response = hub.faults.after(request, response)
            hub.record(
                self.command, unquote(url.path), response.status, 0 if self.command == "HEAD" else response.length
            )
            self._send(response)
        except (TimeoutError, ConnectionError):
            self.close_connection = True

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(response.length))
        self.end_headers()
        if self.command == "HEAD":
            return
        if response.cut_after is not None:  # an injected fault: part of the body, then hang up
            self._send_cut(response)
            return
        if response.file is None:
            self.wfile.write(response.body)
            return
        path, start, length = response.file
        with open(path, "rb") as f:
            f.seek(start)
            while length > 0 and (chunk := f.read(min(_CHUNK, length))):
                self.wfile.write(chunk)
                length -= len(chunk)

    def _send_cut(self, response: Response) -> None:
        if response.file is None:
            data = response.body
        else:
            path, start, length = response.file
            with open(path, "rb") as f:
                f.seek(start)
                data = f.read(length)
        self.wfile.write(data[: response.cut_after])
        self.wfile.flush()
        raise ConnectionAbortedError("body cut short (injected fault)")

    def log_message(self, format: str, *args: Any) -> None:
        # The request line and status only: headers (and so tokens) are never logged.
        logger.debug("local Hub %s: " + format, self.address_string(), *args)


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], hub: LocalHubServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.hub = hub
        super().__init__(address, HubRequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base class prints a traceback to stderr; a client hanging up mid-request is routine for a server.
        logger.debug("local Hub: error while serving %s", client_address, exc_info=True)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalHubServer:
    """A Hub-compatible server on `host:port` (port 0: a free one) storing repos under `root`.

    Args:
        root (`str` or `os.PathLike`):
            Folder holding the repos (created if missing); a server started again on it serves the same repos.
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Address to bind. Only loopback addresses, unless `allow_remote=True`.
        port (`int`, *optional*, defaults to 0):
            Port to bind; 0 picks a free one (read it back from `url` after `start`).
        allow_remote (`bool`, *optional*, defaults to `False`):
            Allow binding a non-loopback address. The server accepts any token: only do this on a trusted network.
        page_size (`int`, *optional*, defaults to 1000):
            Entries per page of tree and commit listings (the Hub's is 1000); a small value lets tests exercise
            `Link: rel="next"` paging.
        require_write_token (`bool`, *optional*, defaults to `False`):
            Refuse writes without a bearer token (any token is accepted). Reads of private repos always need one.
        faults (`FaultHook`, *optional*):
            Consulted on every request, to inject failures: a `hfsoup.testing.hub_faults.FaultPlan` (500/503 then
            success, delays, truncated or corrupted bodies, dropped connections), as the `local_hub` fixture has.

    Example:
        ```py
        >>> with LocalHubServer(tmp_path / "hub") as hub:
        ...     print(hub.url)
        http://127.0.0.1:54321
        ```
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_remote: bool = False,
        page_size: int = 1000,
        require_write_token: bool = False,
        faults: FaultHook | None = None,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise HfsoupError(
                f"Refusing to serve the local Hub on '{host}', which is not a loopback address: it accepts any token.",
                fix="Bind 127.0.0.1, or pass allow_remote=True if the network is trusted.",
            )
        self.root = Path(root)
        self.host, self.port = host, port
        self.store = HubStore(self.root)
        self.page_size = page_size
        self.require_write_token = require_write_token
        self.faults = faults
        #: Every request answered, as (method, unquoted path, status, body bytes sent): tests assert on traffic.
        self.traffic: list[tuple[str, str, int, int]] = []
        self._traffic_lock = threading.Lock()
        self._httpd: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """`http://host:port`, valid once the server is started."""
        if self._httpd is None:
            raise RuntimeError("LocalHubServer.url is only known once the server is started: call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"

    def start(self) -> LocalHubServer:
        """Bind and serve in a daemon thread; returns `self`."""
        if self._httpd is None:
            self._httpd = _HubHTTPServer((self.host, self.port), self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="hfsoup-local-hub", daemon=True
            )
            self._thread.start()
            logger.debug("local Hub serving %s at %s", self.root, self.url)
        return self

    def record(self, method: str, path: str, status: int, nbytes: int) -> None:
        with self._traffic_lock:
            self.traffic.append((method, path, status, nbytes))

    def bytes_served(self, suffix: str = "") -> int:
        """Body bytes sent for GET requests whose path ends with `suffix` (e.g. ".safetensors")."""
        with self._traffic_lock:
            return sum(n for method, path, _, n in self.traffic if method == "GET" and path.endswith(suffix))

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def serve_forever(self) -> None:
        """Serve until `stop()` or Ctrl-C (the CLI's `hfsoup hub serve`); starts the server if needed."""
        self.start()
        thread = self._thread
        while thread is not None and thread.is_alive():
            thread.join(0.5)  # A timed join keeps the main thread responsive to KeyboardInterrupt.

    def __enter__(self) -> LocalHubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
