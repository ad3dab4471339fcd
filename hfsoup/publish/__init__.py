"""Publish: turn a finished soup folder into a model card and push it to the Hub in one commit.

Example:
    ```py
    >>> from hfsoup.publish import push
    >>> push("soup/", "me/my-soup").commit_url
    'https://huggingface.co/me/my-soup/commit/...'
    ```

Modules:
    naming.py       which ingredients are the same model, and what a local one is called in what hfsoup publishes
    card.py         `build_card`: the model card from `hfsoup.json` and `results.json` (ingredients, recipe, scores)
    upload.py       `push`: create the repo if needed, then one commit with every file and the card
    target.py       `Push`: the push options (repo, private, branch, commit message), declared once
"""

from __future__ import annotations

from ..lazy import lazy_exports

# Public names, imported on first use, as in `hfsoup/__init__.py`: every soup imports `naming` and `card`, and only
# a push needs `upload`.
_LAZY = {
    "push": "upload",
    "PushResult": "upload",
    "build_card": "card",
    "read_soup_folder": "card",
    "SoupFolder": "card",
}

__all__ = list(_LAZY)


__getattr__ = lazy_exports(__name__, _LAZY)
