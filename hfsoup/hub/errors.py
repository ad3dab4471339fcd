"""The one translator of the Hub client's errors into hfsoup errors, for everything hfsoup reaches on the Hub.

A Hub call fails the same few ways whatever it reaches (the repo or revision does not exist, the repo is gated, the
token is refused, the server errs, the network is down, the disk is full), but the words and the fix depend on what
was being reached: an ingredient (a model), a dataset, a metric's space, or the repo a soup is pushed to. So
`failure` names the way a call failed, and `translate` words it for a `HubTarget`; `hub_errors` does both around a
block. Callers that recover from a failure (a branch that does not exist yet, an offline dataset used unpinned) ask
`failure` instead of catching the client's exception classes themselves.

Example:
    ```py
    >>> with hub_errors("dataset", "nyu-mll/glue", revision="v9"):
    ...     HfApi().dataset_info("nyu-mll/glue", revision="v9")
    EvaluationError: Revision 'v9' of dataset 'nyu-mll/glue' was not found.
    ```
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, NoReturn

from .. import constants
from ..errors import (
    DiskFullError,
    EvaluationError,
    HfsoupError,
    HubError,
    IngredientNotFoundError,
    option,
)
from ..scrub import cut, scrub
from .retries import first_line, http_status, is_connection_error, is_damaged, tries

#: What a Hub call reaches: an ingredient, a dataset, a metric module's space, the repo a soup is pushed to.
Reaching = Literal["model", "dataset", "metric", "push"]
#: The ways a Hub call fails, as `failure` names them.
Failure = Literal["gated", "repo", "revision", "file", "offline", "http", "connection", "damaged", "disk"]

#: How a user turns the Hub's metric modules off again (the metric messages' fix).
HUB_METRICS_OPT_OUT = (
    "drop --hub-metrics (hub_metrics=False, or unset HFSOUP_HUB_METRICS) to use the module shipped with hfsoup"
)
_TOKEN = option("token", "hf_...")
_DATASET, _DATA_FILES = option("dataset", ...), option("data_files", ...)


@dataclass(frozen=True)
class HubTarget:
    """What a failed Hub call was reaching, as its error names it.

    Attributes:
        kind (`str`): `"model"` (an ingredient), `"dataset"`, `"metric"` (an `evaluate` space) or `"push"`.
        repo_id (`str`): the repo.
        revision (`str`, *optional*): the revision asked for.
        label (`str`, *optional*): how the user named it (an ingredient's `org/name@rev`, a dataset and its
            config); the repo ID when not given.
        token (`str`, *optional*): the token sent; scrubbed from whatever the server said.
    """

    kind: Reaching
    repo_id: str
    revision: str | None = None
    label: str | None = None
    token: str | None = None

    @property
    def name(self) -> str:
        return self.label or self.repo_id


def failure(exc: BaseException) -> Failure | None:
    """How a Hub call failed with `exc`, or None when `exc` is not a Hub failure (nor already an hfsoup error)."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, HfsoupError):
        return None
    if isinstance(exc, GatedRepoError):  # before its base class, RepositoryNotFoundError
        return "gated"
    if isinstance(exc, RepositoryNotFoundError):
        return "repo"
    if isinstance(exc, RevisionNotFoundError):
        return "revision"
    # Offline, a miss in the cache is the client's LocalEntryNotFoundError (an EntryNotFoundError): not a file the
    # Hub lacks, but one hfsoup may not ask it for.
    if isinstance(exc, OfflineModeIsEnabled) or (isinstance(exc, LocalEntryNotFoundError) and constants.hub_offline()):
        return "offline"
    if isinstance(exc, EntryNotFoundError):
        return "file"
    if isinstance(exc, HfHubHTTPError):
        return "http"
    if is_connection_error(exc):  # offline, `datasets` says OfflineModeIsEnabled with a ConnectionError of its own
        return "offline" if constants.hub_offline() else "connection"
    if is_damaged(exc):
        return "damaged"
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk"
    return None


def translate(exc: BaseException, target: HubTarget | None = None) -> HfsoupError | None:
    """The hfsoup error that says what `exc` means for `target`, with the fix; None when hfsoup has nothing to add.

    Without a target (a Hub error that escaped every stage, as the CLI sees it) only HTTP errors are worded.
    """
    if isinstance(exc, HfsoupError):
        return None
    how = failure(exc)
    if target is None:
        if _is_http(exc):
            return HubError(f"The Hub answered: {first_line(exc)}", fix="Check HF_ENDPOINT and your token.")
        return None
    return _WORDING[target.kind](exc, how, target)


def raise_translated(exc: BaseException, target: HubTarget) -> NoReturn:
    """Raise `translate(exc, target)` from `exc`, or `exc` itself when it has no translation; call it in `except`."""
    error = translate(exc, target)
    if error is None:
        raise exc
    raise error from exc


@contextlib.contextmanager
def hub_errors(
    kind: Reaching,
    repo_id: str,
    *,
    revision: str | None = None,
    label: str | None = None,
    token: str | None = None,
) -> Iterator[None]:
    """Translate the Hub client's errors raised in the block (see `translate`) for what it reaches."""
    try:
        yield
    except Exception as exc:
        raise_translated(exc, HubTarget(kind, repo_id, revision=revision, label=label, token=token))


def _is_http(exc: BaseException) -> bool:
    from huggingface_hub.errors import HfHubHTTPError

    return isinstance(exc, HfHubHTTPError)


def _after(exc: BaseException, text: str) -> str:
    """`text` with the number of tries `with_retries` made, or nothing when the call was not retried."""
    count = tries(exc)
    return text.format(count) if count else ""


def _model(exc: BaseException, how: Failure | None, target: HubTarget) -> HfsoupError | None:
    endpoint, repo_id, spec = constants.hub_endpoint(), target.repo_id, target.name
    if how == "gated":
        return IngredientNotFoundError(
            f"Ingredient {repo_id!r} is a gated repo on {endpoint} and this account has not been granted access to "
            "it.",
            fix="Accept its conditions on the model page, then log in with 'hf auth login' or set HF_TOKEN.",
        )
    if how == "repo":
        return IngredientNotFoundError(
            f"Ingredient {repo_id!r} was not found on {endpoint}: the repo does not exist, or it is private and no "
            "valid token was sent.",
            fix="Check the spelling of 'org/name'; for a private repo log in with 'hf auth login', set HF_TOKEN "
            f"or pass {_TOKEN}.",
        )
    if how == "revision":
        return IngredientNotFoundError(
            f"Revision {target.revision!r} of ingredient {repo_id!r} was not found on {endpoint}.",
            fix="Name an existing branch, tag or full commit SHA after '@' (see the repo's 'Files and versions' "
            "tab, or HfApi().list_repo_refs), or drop '@...' to use main.",
        )
    if how == "file":
        return IngredientNotFoundError(
            f"A file of ingredient {spec!r} listed by the Hub could not be downloaded "
            f"({cut(' '.join(str(exc).split()))}).",
            fix="The repo may have changed during the download; run the command again.",
        )
    if how == "offline":
        revision = target.revision or "main"
        return HubError(
            f"Ingredient {spec!r} (revision {revision}) is not in the Hugging Face cache ({constants.hub_cache()}), "
            "and HF_HUB_OFFLINE is set, so the Hub was not asked.",
            fix=f"Download it once with network access: 'hf download {repo_id} --revision {revision}' "
            "(or run this command once online), then rerun; or unset HF_HUB_OFFLINE; or name the model by its "
            "local folder.",
        )
    if how == "http":
        status = http_status(exc) or "?"
        if status == 401:
            return HubError(
                f"The Hub at {endpoint} refused the token sent for ingredient {spec!r} (HTTP 401): it is invalid, "
                "expired or revoked.",
                fix="Create a new token at https://huggingface.co/settings/tokens and log in again with "
                f"'hf auth login', set HF_TOKEN or pass {_TOKEN}.",
            )
        return HubError(
            f"The Hub at {endpoint} answered HTTP {status} for ingredient {spec!r}{_after(exc, ' after {} tries')}: "
            f"{first_line(exc)}",
            fix="Retry later (a rerun resumes from what is in the cache); if it persists, check HF_ENDPOINT and "
            "your token; HFSOUP_HUB_RETRIES sets how many times hfsoup retries.",
        )
    if how in ("connection", "damaged"):
        return HubError(
            f"Could not get ingredient {spec!r} from the Hub at {endpoint} ({first_line(exc)})"
            f"{_after(exc, ', {} tries in a row')}.",
            fix="Check your network or HF_ENDPOINT, then rerun: completed files are kept in the cache and a "
            "partial one resumes; HFSOUP_HUB_RETRIES sets how many times hfsoup retries. Models already "
            "downloaded can also be named by their local folder.",
        )
    if how == "disk":
        return DiskFullError(
            f"No space left on the device while downloading ingredient {spec!r} into the Hub cache "
            f"({exc.filename or constants.hub_cache()}).",
            fix="Free some space, or point HF_HUB_CACHE (or HF_HOME) at a larger disk, then rerun.",
        )
    return None


def _dataset(exc: BaseException, how: Failure | None, target: HubTarget) -> HfsoupError | None:
    endpoint, repo_id = constants.hub_endpoint(), target.repo_id
    if how == "gated":
        return EvaluationError(
            f"Dataset {repo_id!r} is a gated repo on {endpoint} and this account has not been granted access to it.",
            fix="Accept its conditions on the dataset page, then log in with 'hf auth login' or set HF_TOKEN; or "
            f"pass local files with {_DATA_FILES}.",
        )
    if how == "repo":
        return EvaluationError(
            f"Dataset {repo_id!r} was not found on the Hub (or it is private and no valid token was sent).",
            fix=f"Check {_DATASET} and HF_ENDPOINT, or pass local files with {_DATA_FILES}.",
        )
    if how == "revision":
        return EvaluationError(
            f"Revision {target.revision!r} of dataset {repo_id!r} was not found.",
            fix="Name an existing branch, tag or commit SHA after '@', or drop '@...' to use main.",
        )
    if how == "offline":
        return HubError(
            f"Dataset {target.name} (revision {target.revision or 'main'}) is not in the Hugging Face cache, and "
            "HF_HUB_OFFLINE is set, so the Hub was not asked.",
            fix=f"Download it once with network access: 'hf download {repo_id} --repo-type dataset --revision "
            f"{target.revision or 'main'}' (or run this command once online), then rerun; or unset HF_HUB_OFFLINE; "
            f"or pass the split's files with {_DATA_FILES}.",
        )
    if _is_http(exc):
        return HubError(
            f"The Hub at {endpoint} answered HTTP {http_status(exc) or '?'} while downloading dataset "
            f"{target.name}{_after(exc, ' ({} tries)')}: {first_line(exc)}",
            fix="Retry later (files already downloaded are kept in the cache); check HF_ENDPOINT and your token.",
        )
    # Not "damaged": a dataset may be a local folder, whose undecodable file is no network's fault.
    if how == "connection":
        return HubError(
            f"Could not get dataset {target.name} from the Hub at {endpoint} ({first_line(exc)})"
            f"{_after(exc, ', {} tries in a row')}.",
            fix="Check your network or HF_ENDPOINT, then rerun (files already downloaded are kept in the cache), "
            f"or pass local files with {_DATA_FILES}.",
        )
    if how == "disk":
        return DiskFullError(
            f"No space left on the device while downloading dataset {target.name} "
            f"({exc.filename or constants.hub_cache()}).",
            fix="Free some space, or point HF_HOME (or HF_DATASETS_CACHE) at a larger disk, then rerun.",
        )
    return None


def _metric(exc: BaseException, how: Failure | None, target: HubTarget) -> HfsoupError | None:
    # The user asked for this space: whatever kept it from arriving (the Hub, the network, the space missing or
    # private) is said in its own words, with the way back to the shipped module.
    return EvaluationError(
        f"Could not download the metric module {target.repo_id} from {constants.hub_endpoint()}: "
        f"{cut(' '.join(str(exc).split()))}",
        fix=f"Check your network or HF_ENDPOINT, or {HUB_METRICS_OPT_OUT}.",
    )


def _push(exc: BaseException, how: Failure | None, target: HubTarget) -> HfsoupError | None:
    endpoint, repo_id, token = constants.hub_endpoint(), target.repo_id, target.token

    def clean(text: str) -> str:  # the server's words: no token, and not a megabyte of them
        return cut(scrub(text, token))

    if _is_http(exc):  # every HTTP answer (a missing repo or branch included), by its status
        status = http_status(exc)
        said = clean(_server_message(exc))
        if status in (401, 403):
            who = "no token was sent" if not token else "the token was refused or may not write there"
            return HubError(
                f"The Hub at {endpoint} refused to let this session write to {repo_id!r} (HTTP {status}: {who}; "
                f"the server said: {said}).",
                fix=f"Log in with 'hf auth login', set HF_TOKEN, or pass {_TOKEN}: a token with write access.",
            )
        if status == 400:
            return HubError(
                f"The Hub at {endpoint} rejected the push to {repo_id!r} (HTTP 400): {said}.",
                fix="If it names the repo, choose a name of ASCII letters, digits, '-', '_' and '.' (at most 96 "
                "characters); otherwise run again with HFSOUP_DEBUG=1 and report it.",
            )
        if status == 412:
            return HubError(
                f"Someone pushed to {repo_id!r} while this push was running; nothing was committed.",
                fix="Run the push again.",
            )
        return HubError(
            f"The Hub at {endpoint} answered HTTP {status} while pushing to {repo_id!r}: {said}. Nothing was "
            "committed: the repo is as it was.",
            fix="Retry later; if it persists, check HF_ENDPOINT.",
        )
    if isinstance(exc, ValueError) and "Invalid metadata in README.md" in str(exc):
        return HubError(
            f"The Hub at {endpoint} rejected the soup's model card: {clean(' '.join(str(exc).split()))}",
            fix="This is a bug in hfsoup's card: please report it with the card (hfsoup push --dry-run).",
        )
    if how == "connection":
        return HubError(
            f"Could not reach the Hub at {endpoint} to push to {repo_id!r} ({clean(first_line(exc))}).",
            fix="Check your network and HF_ENDPOINT, then push again; nothing was committed.",
        )
    return None


def _server_message(exc: BaseException) -> str:
    """What the server said (its JSON `error`), else the client's first line."""
    response = getattr(exc, "response", None)
    with contextlib.suppress(Exception):
        message = response.json().get("error")  # type: ignore[union-attr]
        if message:
            return str(message).splitlines()[0]
    return first_line(exc)


_WORDING = {"model": _model, "dataset": _dataset, "metric": _metric, "push": _push}
