"""`Output`: where and how a soup is written, declared once for the API, the CLI (`hfsoup soup -o DIR --dtype ...`)
and a recipe's `output:` section."""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..constants import DEFAULT_MAX_SHARD_SIZE, DTYPE_NAMES
from ..options import option

DTYPES = ("auto", *DTYPE_NAMES)


def memory_limit() -> schema.Kind:
    """`--max-memory`: a size (`8GB`, `500MB`, bytes), or none (no limit)."""
    sized = schema.size()

    def check(v: object) -> str | None:
        if v is None or (isinstance(v, str) and v.strip().lower() == "none"):
            return None
        return sized.check(v)

    def parse(text: str) -> str | None:
        if text.strip().lower() == "none":
            return None
        if message := sized.check(text):
            raise ValueError(f"expected a size such as 8GB or 500MB, or none ({message})")
        return text

    return schema.custom(check, parse=parse, metavar="SIZE")


def limit_bytes(value: str | int | None) -> int | None:
    """The limit in bytes (None: none), from a checked `max_memory`."""
    from .checkpoint import parse_size

    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return None
    return parse_size(value)


@dataclass
class Output:
    """The output folder and its format.

    Args:
        dir (`str`): the output folder; it appears only once complete.
        dtype (`str`, *optional*, defaults to `"auto"`): `float32`, `float16`, `bfloat16`, or the first ingredient's.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`): larger outputs are split into indexed shards.
        overwrite (`bool`, *optional*): replace an earlier hfsoup output at `dir` (never any other folder).
        max_memory (`str`, *optional*): refuse, before any download, a soup whose estimated memory (the scoring
            model, the learned soup's ingredients, Fisher's and RegMean's statistics) exceeds it: `8GB`, `500MB`.
    """

    dir: str = option(kind=schema.string(), flag="-o/--output", metavar="DIR", help="output folder (must not exist)")
    dtype: str = option("auto", kind=schema.one_of(DTYPES), help="output dtype")
    max_shard_size: str = option(DEFAULT_MAX_SHARD_SIZE, kind=schema.size(), help="largest shard, e.g. 5GB, 500MB")
    overwrite: bool = option(
        False,
        kind=schema.boolean(),
        help="replace an earlier hfsoup output at the output path (never any other folder)",
    )
    max_memory: str | None = option(
        None,
        kind=memory_limit(),
        help="refuse up front a soup estimated to need more memory, e.g. 8GB (default: none, no limit)",
    )
