"""`Push`: where a soup is published, declared once for the API, the CLI (`hfsoup push DIR ORG/NAME --private`) and
a recipe's `push:` section."""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..options import option


@dataclass
class Push:
    """The Hub model repo a soup is pushed to, in one commit.

    Args:
        repo_id (`str`): `org/name`, created if it does not exist.
        private (`bool`, *optional*): create the repo as private.
        branch (`str`, *optional*): commit to this branch (created from main if needed).
        commit_message (`str`, *optional*): the commit's title.
    """

    repo_id: str = option(kind=schema.string(), cli=False, help="the model repo (created if it does not exist)")
    private: bool = option(False, kind=schema.boolean(), help="create the repo as private")
    branch: str | None = option(
        None,
        kind=schema.string(optional=True),
        metavar="B",
        help="commit to this branch (created from main if needed)",
    )
    commit_message: str | None = option(
        None, kind=schema.string(optional=True), metavar="M", help="the commit's title"
    )
