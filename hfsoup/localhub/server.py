"""A local, Hub-compatible HTTP server for tests, notebooks, the demo and air-gapped teams.

It speaks enough of the Hugging Face Hub protocol for the real clients (`huggingface_hub`, `transformers`,
`datasets`, `evaluate`) pointed at it through `HF_ENDPOINT` to create model, dataset and space repos, upload
(regular and LFS files), branch, tag, list and download, list repos (the model tree's tags included), duplicate,
move and squash them, and open, discuss and merge pull requests (the README's local-Hub table lists every call).
Blobs no repo names any more are removed when a repo is deleted or squashed (`HubStore.collect`); each request
answered is one INFO line on the `hfsoup.localhub.requests` logger. Repos persist under `root` (see `hub_store`), so a
server restarted on the same root serves the same repos. Stdlib only.

Uploads of LFS files must not go to Xet storage, which this server does not speak: set `HF_HUB_DISABLE_XET=1`
(`hfsoup.testing.env.use_local_hub` does).

Example:
    ```py
    >>> from huggingface_hub import HfApi
    >>> from hfsoup.testing.env import use_local_hub
    >>> with LocalHubServer("./hub-store", anonymous_writes=True) as hub, use_local_hub(hub.url, "./hf_home"):
    ...     HfApi().create_repo("org/tiny-bert")
    ```
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from ..errors import HfsoupError
from . import discussions as hub_discussions
from . import listing as hub_listing
from . import reads as hub_reads
from . import writes as hub_writes
from .access import AccessPolicy, HubUser
from .protocol import Request, Response, error_response
from .store import EndpointError, HubStore, parse_count

logger = logging.getLogger(__name__)
#: One line per request answered, at INFO: method, path (no query string), status, body bytes, milliseconds.
#: `hfsoup hub serve` shows them unless `--quiet`; a library user turns them on with `logging`.
request_logger = logging.getLogger("hfsoup.localhub.requests")

_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_CHUNK = 1 << 20
_MAX_LINE = 65536
_LINGER_BYTES = 16 << 20
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
    ("POST", "duplicate"): hub_writes.duplicate_repo,
    ("POST", "super-squash"): hub_writes.super_squash,
    ("GET", "discussions"): hub_discussions.discussions_get,
    ("POST", "discussions"): hub_discussions.discussions_post,
}
_ORG_REPOS = ["settings", "repositories"]  # /api/organizations/{org}/settings/repositories
_NO_TAIL = {"refs", "settings", "duplicate", None}  # actions whose endpoint takes no trailing segments
_API: dict[tuple[str, str], Endpoint] = {
    ("GET", "whoami-v2"): hub_reads.whoami,
    ("POST", "repos/create"): hub_writes.create_repo,
    ("DELETE", "repos/delete"): hub_writes.delete_repo,
    ("POST", "validate-yaml"): hub_writes.validate_yaml,
    ("POST", "repos/move"): hub_writes.move_repo,
    ("GET", "models"): hub_listing.list_models,
    ("GET", "datasets"): hub_listing.list_datasets,
    ("GET", "spaces"): hub_listing.list_spaces,
    ("GET", "settings/repositories"): hub_listing.user_repos,
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
        if (
            method == "GET"
            and len(rest) == 4
            and rest[0] == "organizations"
            and rest[2:] == ["settings", "repositories"]
        ):
            return hub_listing.user_repos, [unquote(rest[1])], False
        if len(rest) >= 3 and rest[0] in _REPO_TYPES:
            action, tail = (rest[3] if len(rest) > 3 else None), rest[4:]
            endpoint = _REPO_API.get((method, action))
            if endpoint is not None and not (action in _NO_TAIL and tail):
                args: list[Any] = [_REPO_TYPES[rest[0]], f"{unquote(rest[1])}/{unquote(rest[2])}"]
                # A commit streams its NDJSON body: it may carry many regular files, each stored as it is read.
                return endpoint, args if action in _NO_TAIL else [*args, tail], action == "commit"
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
                hub_reads.resolve_file,
                [repo_type, f"{unquote(segments[0])}/{unquote(segments[1])}", segments[3:]],
                False,
            )
        if segments[1:2] and segments[1].endswith(".git") and segments[2:] == ["info", "lfs", "objects", "batch"]:
            if method == "POST":
                return hub_writes.lfs_batch, [repo_type, f"{unquote(segments[0])}/{unquote(segments[1][:-4])}"], False
    raise EndpointError(404, f"No such endpoint: {method} {path}")


class _BodyReader:
    """Reads a request body framed by Content-Length or chunked transfer encoding, never past its end nor past
    `limit` bytes (413); a Content-Length that is not a number, or one sent with chunked encoding, is a 400."""

    def __init__(self, rfile: IO[bytes], headers: Any, limit: int) -> None:
        self.rfile = rfile
        self.limit = limit
        self.received = 0
        lengths = headers.get_all("Content-Length") or []
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        if len(lengths) > 1 or (lengths and self.chunked):  # two framings: the classic request smuggling setup
            raise EndpointError(400, "A request must carry one Content-Length or chunked encoding, not both")
        length = parse_count(lengths[0].strip()) if lengths else 0
        if length is None:  # "-1", "1e9", "0x10", "²": all refused
            raise EndpointError(400, f"Invalid Content-Length: {lengths[0][:40]!r}")
        self.remaining = 0 if self.chunked else length
        if self.remaining > limit:  # refused before a byte of the body is read
            raise EndpointError(413, f"Request body of {self.remaining} bytes is over this endpoint's {limit} bytes")
        self.finished = not self.chunked and self.remaining == 0
        self.over_limit = False

    def read(self, n: int = _CHUNK) -> bytes:
        if self.over_limit:  # and stays so: the rest of the body is never read
            raise EndpointError(413, f"Request body is over this endpoint's {self.limit} bytes")
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
            if self.received + size > self.limit:
                self.over_limit = True
            self.remaining = size
            if self.over_limit:
                return self.read(n)
        data = self.rfile.read(min(n, self.remaining))
        if not data:
            raise ConnectionAbortedError("client closed the connection in the middle of the request body")
        self.remaining -= len(data)
        self.received += len(data)
        if self.remaining == 0:
            if self.chunked:
                self.rfile.readline(_MAX_LINE)  # the CRLF after each chunk
            else:
                self.finished = True
        return data

    def read_all(self) -> bytes:
        return b"".join(iter(self.read, b""))

    def drain(self, most: int = _CHUNK) -> bool:
        """Read what the endpoint left unread, up to `most` bytes; False when more remains (close the connection
        then, rather than read a large upload nobody wants)."""
        start = self.received
        try:
            while self.received - start <= most and self.read():
                pass
        except (EndpointError, ConnectionError):
            return False
        return self.finished


class HubRequestHandler(BaseHTTPRequestHandler):
    """Routes one HTTP/1.1 request to its endpoint; keep-alive safe (the body is always read to its end)."""

    protocol_version = "HTTP/1.1"
    server: _HubHTTPServer

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def setup(self) -> None:
        # Every read and write of this connection times out: a stalled or slow client cannot hold a thread forever.
        self.timeout = self.server.hub.timeout
        super().setup()

    def _handle(self) -> None:
        hub = self.server.hub
        started = time.monotonic()
        url = urlsplit(self.path)
        host = self.headers.get("Host") or ""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        request = Request(
            method=self.command,
            path=url.path,
            query=parse_qs(url.query, keep_blank_values=True),
            headers=self.headers,
            store=hub.store,
            base_url=f"http://{host}",
            token=(token.strip() or None) if scheme.lower() == "bearer" else None,
            page_size=hub.page_size,
            access=hub.access,
            max_json_bytes=hub.max_json_bytes,
        )
        reader: _BodyReader | None = None
        try:
            try:
                if not hub.host_allowed(host):  # DNS rebinding: a browser page whose name now points here
                    raise EndpointError(421, f"Host {host[:100]!r} is not this server's address ({hub.url})")
                try:
                    endpoint, args, streaming = route(self.command, url.path)
                except EndpointError:
                    endpoint, streaming = None, False
                limit = hub.max_upload_bytes if streaming else hub.max_json_bytes
                reader = _BodyReader(self.rfile, self.headers, limit)
                if endpoint is None:
                    route(self.command, url.path)  # raises the 404 again, now that the body can be drained
                request.user = hub.access.user_for(request.token)
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
            # Whatever the endpoint left unread would corrupt the next request on this connection: read it, or close.
            if reader is None or not reader.drain():
                self.close_connection = True
                response.headers["Connection"] = "close"
            if hub.faults:
                response = hub.faults.after(request, response)
            hub.record(
                self.command,
                unquote(url.path),
                response.status,
                0 if self.command == "HEAD" else response.length,
                ms=(time.monotonic() - started) * 1000,
            )
            self._send(response)
        except TimeoutError:
            self.close_connection = True
            self._send_quietly(error_response(EndpointError(408, "Request timed out: the client stopped sending")))
        except ConnectionError:
            self.close_connection = True

    def _send_quietly(self, response: Response) -> None:
        response.headers["Connection"] = "close"
        try:
            self._send(response)
        except OSError:  # the client is gone or stalled: nothing more to do for it
            pass

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
        # One thread per connection, at most this many: the rest wait in the accept queue, then get a 503.
        self.slots = threading.BoundedSemaphore(hub.max_connections)
        super().__init__(address, HubRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(timeout=self.hub.timeout):
            _refuse_busy(request)
            self.close_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        self.hub.connections.add(1)
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.hub.connections.add(-1)
            self.slots.release()

    def shutdown_request(self, request: Any) -> None:
        # A lingering close: after our last answer, read (and drop) what the client still sends for a moment. Closing
        # with unread bytes makes the kernel send a reset, and a client still sending a refused body would see
        # "connection reset" instead of our 413.
        try:
            request.shutdown(socket.SHUT_WR)
            request.settimeout(0.2)
            deadline, dropped = time.monotonic() + 1, 0
            while dropped < _LINGER_BYTES and time.monotonic() < deadline and (data := request.recv(_CHUNK)):
                dropped += len(data)
        except OSError:
            pass
        self.close_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base class prints a traceback to stderr; a client hanging up mid-request is routine for a server.
        logger.debug("local Hub: error while serving %s", client_address, exc_info=True)


def _refuse_busy(connection: socket.socket) -> None:
    body = json.dumps({"error": "The local Hub is serving too many connections; retry shortly"}).encode()
    head = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    try:
        connection.settimeout(1)
        connection.sendall(f"{head}Connection: close\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    except OSError:
        pass


class _Counter:
    """A thread-safe count that remembers its peak (open connections, for tests of the thread bound)."""

    def __init__(self) -> None:
        self.value = self.peak = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n
            self.peak = max(self.peak, self.value)


class TrafficLog(deque):
    """The last `maxlen` requests answered, as (method, unquoted path, status, body bytes sent); slices like a list,
    so that tests can take `traffic[start:]`, and stays bounded on a server that runs for weeks."""

    def __getitem__(self, index: Any) -> Any:
        return list(self)[index] if isinstance(index, slice) else super().__getitem__(index)


def _printable(path: str) -> str:
    """A path fit for one log line: control characters (a newline would forge another line) escaped."""
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in path)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LocalHubServer:
    """A Hub-compatible server on `host:port` (port 0: a free one) storing repos under `root`.

    Its access mode is explicit: `tokens` (token -> `HubUser`) for a server people share, where every write and
    every private read needs a token that owns the namespace (see `hub_access`), or `anonymous_writes=True` for a
    throwaway test store. With neither, it serves public repos read-only.

    Args:
        root (`str` or `os.PathLike`):
            Folder holding the repos (created if missing); a server started again on it serves the same repos.
        tokens (`Mapping[str, HubUser]`, *optional*):
            The tokens it accepts and the user (and organizations) each stands for; any other token is a 401.
        anonymous_writes (`bool`, *optional*, defaults to `False`):
            Take writes without a token, to any namespace, and any token as an administrator of every namespace
            (private repos still need a token to be read). For test stores only.
        host (`str`, *optional*, defaults to `"127.0.0.1"`):
            Address to bind. Only loopback addresses, unless `allow_remote=True`.
        port (`int`, *optional*, defaults to 0):
            Port to bind; 0 picks a free one (read it back from `url` after `start`).
        allow_remote (`bool`, *optional*, defaults to `False`):
            Allow binding a non-loopback address. Traffic is plain HTTP: tokens cross the network in clear.
        allowed_hosts (iterable of `str`, *optional*):
            Host names, besides `localhost` and IP addresses, that requests may name in their `Host` header (any
            other is a 421: a page whose DNS name was rebound to this machine cannot reach the server).
        page_size (`int`, *optional*, defaults to 1000):
            Entries per page of tree and commit listings (the Hub's is 1000); a small value lets tests exercise
            `Link: rel="next"` paging.
        max_json_bytes (`int`, *optional*, defaults to 16 MiB):
            The largest JSON body, and the longest line of a commit's NDJSON (a regular file travels in one line).
        max_upload_bytes (`int`, *optional*, defaults to 50 GiB):
            The largest LFS upload or commit body (both streamed to disk).
        timeout (`float`, *optional*, defaults to 30):
            Seconds any read or write on a connection may take, idle keep-alive included; also how long a
            connection waits for a free worker before a 503.
        max_connections (`int`, *optional*, defaults to 64):
            Connections served at once, one thread each.
        traffic_limit (`int`, *optional*, defaults to 100000):
            How many of the last requests `traffic` keeps.
        faults (`FaultHook`, *optional*):
            Consulted on every request, to inject failures: a `hfsoup.localhub.faults.FaultPlan` (500/503 then
            success, delays, truncated or corrupted bodies, dropped connections), as the `local_hub` fixture has.

    Example:
        ```py
        >>> with LocalHubServer(tmp_path / "hub", tokens={"hf_...": HubUser("me")}) as hub:
        ...     print(hub.url)
        http://127.0.0.1:54321
        ```
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        tokens: Mapping[str, HubUser] | None = None,
        anonymous_writes: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_remote: bool = False,
        allowed_hosts: Iterable[str] = (),
        page_size: int = 1000,
        max_json_bytes: int = 16 << 20,
        max_upload_bytes: int = 50 << 30,
        timeout: float = 30.0,
        max_connections: int = 64,
        traffic_limit: int = 100_000,
        faults: FaultHook | None = None,
    ) -> None:
        if not allow_remote and not _is_loopback(host):
            raise HfsoupError(
                f"Refusing to serve the local Hub on '{host}', which is not a loopback address: it speaks plain HTTP.",
                fix="Bind 127.0.0.1, or pass allow_remote=True if the network is trusted.",
            )
        self.root = Path(root)
        self.host, self.port = host, port
        self.store = HubStore(self.root)
        self.access = AccessPolicy(dict(tokens or {}), anonymous_writes=anonymous_writes)
        self.allowed_hosts = {"localhost", *(h.lower() for h in allowed_hosts)}
        self.page_size = page_size
        self.max_json_bytes, self.max_upload_bytes = max_json_bytes, max_upload_bytes
        self.timeout, self.max_connections = timeout, max_connections
        self.faults = faults
        #: The last requests answered, as (method, unquoted path, status, body bytes sent): tests assert on traffic.
        self.traffic = TrafficLog(maxlen=traffic_limit)
        #: Connections being served now (`.value`) and at most so far (`.peak`).
        self.connections = _Counter()
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
            if not self.store.claim():
                logger.warning("local Hub: another server uses %s; leaving its uploads in flight alone", self.root)
            self._httpd = _HubHTTPServer((self.host, self.port), self)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="hfsoup-local-hub", daemon=True
            )
            self._thread.start()
            logger.debug("local Hub serving %s at %s", self.root, self.url)
        return self

    def host_allowed(self, host: str) -> bool:
        """Whether a request's `Host` header names this server: its port, and `localhost`, one of `allowed_hosts` or
        the bound address (any loopback one for a loopback server). A DNS name an attacker controls could be rebound
        to this machine; an address cannot."""
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or "]" in port:
            name, port = host, ""
        if self._httpd is None or port != str(self._httpd.server_address[1]):
            return False
        name = name.lower()
        if name in self.allowed_hosts:
            return True
        try:
            address = ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
        except ValueError:
            return False
        bound = ipaddress.ip_address(self._httpd.server_address[0])
        return address == bound or bound.is_unspecified or (bound.is_loopback and address.is_loopback)

    def record(self, method: str, path: str, status: int, nbytes: int, *, ms: float = 0.0) -> None:
        with self._traffic_lock:
            self.traffic.append((method, path, status, nbytes))
        # The path only: never the query (signed LFS URLs carry their signature there) nor a header (tokens).
        request_logger.info("%s %s %d %dB %.0fms", method, _printable(path)[:300], status, nbytes, ms)

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
            self.store.release()
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
