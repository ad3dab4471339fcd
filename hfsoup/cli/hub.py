"""`hfsoup hub serve` and `hfsoup hub gc`: the local Hub-compatible server (hfsoup.localhub), for air-gapped teams
and tests, and the removal of the blobs no repo names any more."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import HfsoupError

#: The logger `hfsoup.localhub.server` writes one line per request to (not imported here: `hfsoup --help` stays light).
REQUEST_LOGGER = "hfsoup.localhub.requests"

HUB_EPILOG = """\
examples:
  hfsoup hub serve --root ./hub-store --port 8080            # prints a write token for you, once
  hfsoup hub serve --root ./hub-store --user me --org team   # the token may also write to team/...
  hfsoup hub serve --root ./hub-store --token-file tokens.json
  HF_ENDPOINT=http://127.0.0.1:8080 HF_HUB_DISABLE_XET=1 HF_TOKEN=hf_... hf upload me/name ./folder
  hfsoup hub gc --root ./hub-store                           # remove blobs no repo names any more

A token file (chmod 600) maps tokens to users and the organizations they may write to:
  {"tokens": [{"token": "hf_...", "user": "alice", "orgs": ["team"]}, {"token": "hf_...", "user": "bob"}]}
"""


def add(verbs: argparse._SubParsersAction) -> None:
    hub = verbs.add_parser(
        "hub",
        help="a local Hub-compatible server",
        description="A local Hub-compatible server, and the upkeep of its store.",
        epilog=HUB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the examples, one a line
    )
    hub_verbs = hub.add_subparsers(dest="hub_command", metavar="HUB_COMMAND", required=True)
    serve = hub_verbs.add_parser(
        "serve",
        help="serve model and dataset repos from a folder",
        description="Serve a folder as a Hub that huggingface_hub, transformers and datasets reach via HF_ENDPOINT.",
        epilog=HUB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--root", required=True, metavar="DIR", help="where repos are stored (created if missing)")
    serve.add_argument("--port", type=int, default=0, help="port (default: a free one, printed at start)")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default: 127.0.0.1)")
    serve.add_argument("--token-file", metavar="FILE", help="JSON file of tokens and their users (see below)")
    serve.add_argument("--user", help="without --token-file: the user of the token created at start (default: you)")
    serve.add_argument("--org", action="append", default=[], metavar="ORG", help="an organization it may write to")
    serve.add_argument(
        "--anonymous-writes",
        action="store_true",
        help="take writes without a token, to any namespace: only for a throwaway store",
    )
    serve.add_argument("--max-body-mb", type=float, default=16, help="largest JSON body, in MiB (default: 16)")
    serve.add_argument("--max-upload-gb", type=float, default=50, help="largest upload, in GiB (default: 50)")
    serve.add_argument("--timeout", type=float, default=30, help="seconds a connection may stall (default: 30)")
    serve.add_argument("--max-connections", type=int, default=64, help="connections served at once (default: 64)")
    serve.set_defaults(func=run_serve)
    gc = hub_verbs.add_parser(
        "gc",
        help="remove blobs no repo names",
        description="Remove the stored files that no commit of any repo names (the server does so on delete; run it "
        "after repos were removed by hand). Safe while a server runs on the same folder.",
        epilog=HUB_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gc.add_argument("--root", required=True, metavar="DIR", help="the store of `hfsoup hub serve`")
    gc.add_argument(
        "--grace-minutes",
        type=float,
        default=60,
        help="keep uploads this recent whose commit has not come yet (default: 60)",
    )
    gc.set_defaults(func=run_gc)


def run_serve(args: argparse.Namespace) -> int:
    from ..localhub.access import HubUser, load_token_file, new_token
    from ..localhub.server import LocalHubServer
    from ..localhub.store import check_namespace

    token = None
    if args.token_file:
        tokens = load_token_file(args.token_file)
    else:
        user = args.user or default_user()
        for name in [user, *args.org]:
            if not check_namespace(name):
                raise HfsoupError(
                    f"{name!r} is not a valid user or organization name for the local Hub.",
                    fix="Use letters, digits and '-_.' (at most 96 characters), e.g. --user alice.",
                )
        token = new_token()
        tokens = {token: HubUser(user, tuple(args.org))}
    server = LocalHubServer(
        args.root,
        tokens=tokens,
        anonymous_writes=args.anonymous_writes,
        host=args.host,
        port=args.port,
        max_json_bytes=int(args.max_body_mb * (1 << 20)),
        max_upload_bytes=int(args.max_upload_gb * (1 << 30)),
        timeout=args.timeout,
        max_connections=args.max_connections,
    )
    # -q/--quiet (before or after the verb, as everywhere) also silences the line per request.
    handler = _log_requests(quiet=args.quiet)  # before the first request can come
    try:
        server.start()
        _print_banner(args, server.root, server.url, token, tokens)
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) is how a server stops: one line, not the soup's staging message
        print("Local Hub stopped.", flush=True)
    finally:
        server.stop()
        _stop_logging_requests(handler)
    return 0


def _print_banner(args: argparse.Namespace, root: object, url: str, token: str | None, tokens: dict) -> None:
    print(f"Local Hub serving {root} at {url}")
    if args.anonymous_writes:
        print("WARNING: --anonymous-writes: anyone on this machine may create, change and delete any repo.")
    if token is not None:
        # Printed here once, never logged or stored: whoever reads this terminal may write as this user.
        orgs = f" and organizations {', '.join(args.org)}" if args.org else ""
        print(f"Write token for user '{tokens[token].name}'{orgs} (shown only now): {token}")
    else:
        print(f"Tokens from {args.token_file}: {len(tokens)}")
    hint = "the write token above" if token is not None else "your token"
    print(f"Point clients at it with: export HF_ENDPOINT={url} HF_HUB_DISABLE_XET=1 HF_TOKEN=<{hint}>")
    print("Press Ctrl-C to stop.", flush=True)


def _log_requests(*, quiet: bool) -> logging.Handler | None:
    """One line per request on stderr (method, path, status, bytes, ms), unless `quiet`."""
    if quiet:
        return None
    from .. import scrub

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(scrub.ScrubbingFormatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    requests = logging.getLogger(REQUEST_LOGGER)
    requests.addHandler(handler)
    requests.setLevel(logging.INFO)
    requests.propagate = False  # its own format, not the "INFO hfsoup...:" of hfsoup's handler
    return handler


def _stop_logging_requests(handler: logging.Handler | None) -> None:
    if handler is not None:
        requests = logging.getLogger(REQUEST_LOGGER)
        requests.removeHandler(handler)
        requests.setLevel(logging.NOTSET)
        requests.propagate = True


def run_gc(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..localhub.store import HubStore

    root = Path(args.root)
    if not (root / "repos").is_dir():
        raise HfsoupError(
            f"{root} is not a local Hub store (it has no repos/ folder).",
            fix="Pass the --root that `hfsoup hub serve` was given.",
        )
    if args.grace_minutes < 0:
        raise HfsoupError("--grace-minutes must not be negative.", fix="Pass 0 or more, e.g. --grace-minutes 60.")
    removed, freed = HubStore(root).collect(grace_seconds=args.grace_minutes * 60)
    print(f"Removed {removed} blob{'s' if removed != 1 else ''} no repo names ({freed / (1 << 20):.1f} MiB freed).")
    return 0


def default_user() -> str:
    """The OS user's name as a Hub user name (characters the Hub refuses become '-'), or 'local'."""
    import getpass
    import re

    try:
        name = re.sub(r"[^A-Za-z0-9._-]", "-", getpass.getuser()).strip("-._")[:96]
    except (OSError, KeyError):  # no user name in this environment (a container without a passwd entry)
        name = ""
    return name or "local"
