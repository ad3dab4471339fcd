"""Ingredients on the Hub or on disk: parse `org/name@revision`, pin it to a commit SHA, fetch only what a soup needs.

- `refs`: what the user named (`IngredientRef`, `parse_ingredient`), the pinned ingredient (`PinnedIngredient`) and
  the support files a soup carries over besides the weights.
- `download`: `resolve` (pin, choose the files, download nothing) and `fetch` (download, every file checked against
  the checksum the Hub lists for it).
- `remote`: `remote_structure`, the tensors' names, dtypes and shapes from Range reads of the safetensors headers.
- `retries`: `with_retries`, and what counts as a transient failure.
- `errors`: the one translator of Hub client errors into hfsoup errors, for models, datasets, metrics and pushes.
"""

from __future__ import annotations

from .download import fetch, resolve
from .errors import HubTarget, hub_errors, translate
from .refs import (
    CARD_FILE,
    CONFIG_FILES,
    PROCESSOR_FILES,
    SUPPORT_FILES,
    TOKENIZER_FILES,
    IngredientRef,
    PinnedIngredient,
    parse_ingredient,
)
from .remote import remote_structure
from .retries import with_retries

__all__ = [
    "CARD_FILE",
    "CONFIG_FILES",
    "PROCESSOR_FILES",
    "SUPPORT_FILES",
    "TOKENIZER_FILES",
    "HubTarget",
    "IngredientRef",
    "PinnedIngredient",
    "fetch",
    "hub_errors",
    "parse_ingredient",
    "remote_structure",
    "resolve",
    "translate",
    "with_retries",
]
