"""Who may do what on the local Hub: tokens, users, organizations, and signed LFS transfer URLs.

The rules follow the Hub's:

- a write (create or delete a repo, commit, preupload, LFS upload, branches, tags, settings) needs a token whose
  user owns the repo's namespace or belongs to it as an organization; no token is a 401 ("Invalid username or
  password."), another namespace a 403;
- any token that may read a repo may open a pull request on it (`create_commit(create_pr=True)`, its LFS uploads),
  push to `refs/pr/N` of its own open pull requests, open discussions and comment; merging is a write;
- a private repo is readable only by its namespace's user and members; to anyone else it looks missing (404
  `RepoNotFound`, or 401 without a token), as on the Hub;
- an unknown token is refused on every request (401 "Invalid credentials in Authorization header");
- LFS bytes are reached only through a repo the caller may read: the batch API hands out URLs signed for one repo,
  one object and one operation, valid for an hour, as the Hub's signed storage URLs are.

`AccessPolicy(anonymous_writes=True)` is the explicit permissive mode of a throwaway test store: writes need no token
and any token is taken as an administrator of every namespace (the fixtures' mode; never for a shared machine).

Token files (`hfsoup hub serve --token-file FILE`) are JSON, readable by their owner only:

```json
{"tokens": [{"token": "hf_...", "user": "alice", "orgs": ["team"]}, {"token": "hf_...", "user": "bob"}]}
```

`"orgs": ["*"]` makes an administrator, who may write to every namespace and read every repo.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
import string
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HfsoupError
from .store import EndpointError, check_namespace, parse_count

#: An `orgs` entry granting every namespace: the administrator token of a sandbox or a test store.
ANY_NAMESPACE = "*"
#: What the Hub answers to a write without a token, and to a token it does not know.
NO_TOKEN_MESSAGE = "Invalid username or password."
BAD_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
_SIGNED_URL_SECONDS = 3600


@dataclass(frozen=True)
class HubUser:
    """The account a token stands for: a user name and the organizations it may write to (`"*"`: all of them)."""

    name: str
    orgs: tuple[str, ...] = ()

    def owns(self, namespace: str) -> bool:
        return namespace == self.name or namespace in self.orgs or ANY_NAMESPACE in self.orgs


#: Every token of the permissive mode stands for this user.
ADMIN = HubUser("hfsoup-local", (ANY_NAMESPACE,))


@dataclass
class AccessPolicy:
    """The tokens a local Hub accepts, and whether it takes writes without one.

    Args:
        tokens (`dict[str, HubUser]`, *optional*): token -> the user it authenticates as.
        anonymous_writes (`bool`, *optional*, defaults to `False`): the permissive mode described above.
    """

    tokens: dict[str, HubUser] = field(default_factory=dict)
    anonymous_writes: bool = False
    #: Signs LFS transfer URLs; new at every start, so URLs handed out by an earlier server stop working.
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    def user_for(self, token: str | None) -> HubUser | None:
        """The user `token` authenticates as (None without a token); an unknown token is a 401, as on the Hub."""
        if token is None:
            return None
        user = self.tokens.get(token)
        if user is None and self.anonymous_writes:
            return ADMIN
        if user is None:
            raise EndpointError(401, BAD_TOKEN_MESSAGE)
        return user

    def check_write(self, user: HubUser | None, namespace: str, what: str) -> None:
        """Refuse `what` (e.g. "create a model") under `namespace` unless `user` owns it (401 / 403 as on the Hub)."""
        if self.anonymous_writes:
            return
        if user is None:
            raise EndpointError(401, NO_TOKEN_MESSAGE)
        if not user.owns(namespace):
            raise EndpointError(403, f'You don\'t have the rights to {what} under the namespace "{namespace}"')

    def may_read(self, user: HubUser | None, namespace: str, private: bool) -> bool:
        return not private or (user is not None and user.owns(namespace))

    # Signed LFS URLs ---------------------------------------------------------------------------------------------
    def sign(self, operation: str, repo_key: str, oid: str, size: int) -> str:
        """The query string that authorizes `operation` ("upload" or "download") of one object for one repo."""
        expires = int(time.time()) + _SIGNED_URL_SECONDS
        return f"repo={repo_key}&op={operation}&exp={expires}&sig={self._mac(operation, repo_key, oid, size, expires)}"

    def check_signature(self, query: dict[str, list[str]], operation: str, oid: str, size: int) -> str:
        """The repo key a signed URL was issued for; 403 when the signature is missing, wrong or expired."""
        values = {key: (query.get(key) or [""])[0] for key in ("repo", "op", "exp", "sig")}
        expires = parse_count(values["exp"]) or 0
        expected = self._mac(operation, values["repo"], oid, size, expires)
        signature = values["sig"].encode("utf-8", "replace")  # bytes: compare_digest refuses non-ASCII str
        if values["op"] != operation or expires < time.time() or not hmac.compare_digest(signature, expected.encode()):
            raise EndpointError(403, "This LFS URL is not signed for this object, or it expired: ask the batch API")
        return values["repo"]

    def _mac(self, operation: str, repo_key: str, oid: str, size: int, expires: int) -> str:
        message = f"{operation}\n{repo_key}\n{oid}\n{size}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()


def new_token() -> str:
    """A random token shaped like the Hub's (`hf_` and 34 letters), so token scrubbers recognize it."""
    return "hf_" + "".join(secrets.choice(string.ascii_letters) for _ in range(34))


class TokenFileError(HfsoupError):
    """A `--token-file` for the local Hub that cannot be read, is readable by other users or is malformed."""


def load_token_file(path: str | os.PathLike) -> dict[str, HubUser]:
    """Read a token file (format in the module docstring); refuse one that users other than its owner may read."""
    path = Path(path)
    fix = 'Write it as {"tokens": [{"token": "hf_...", "user": "alice", "orgs": ["team"]}]} and chmod 600 it.'
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise TokenFileError(f"Cannot read the token file {path}: {err.strerror or err}.", fix=fix) from err
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenFileError(
            f"The token file {path} is readable or writable by other users (mode {stat.filemode(mode)}): anyone "
            "on this machine could write as its users.",
            fix=f"chmod 600 {path}",
        )
    try:
        entries = json.loads(text)["tokens"]
        if not isinstance(entries, list) or not entries:
            raise TypeError("'tokens' must be a non-empty list")
        tokens: dict[str, HubUser] = {}
        for i, entry in enumerate(entries):
            token, user, orgs = entry["token"], entry["user"], entry.get("orgs", [])
            if not isinstance(token, str) or len(token) < 8 or token in tokens:
                raise TypeError(f"tokens[{i}].token must be a unique string of at least 8 characters")
            if not isinstance(orgs, list) or not all(isinstance(o, str) for o in orgs):
                raise TypeError(f"tokens[{i}].orgs must be a list of names")
            for name in [user, *orgs]:
                if name != ANY_NAMESPACE and not check_namespace(name):
                    raise TypeError(f"tokens[{i}]: {str(name)[:100]!r} is not a valid user or organization name")
            tokens[token] = HubUser(user, tuple(orgs))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise TokenFileError(f"The token file {path} is malformed: {str(err)[:200]}.", fix=fix) from err
    return tokens
