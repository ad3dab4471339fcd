"""`Output`: where and how a soup is written, declared once for the API, the CLI (`hfsoup soup -o DIR --dtype ...`)
and a recipe's `output:` section."""

from __future__ import annotations

from dataclasses import dataclass

from .. import schema
from ..constants import DEFAULT_MAX_SHARD_SIZE, DTYPE_NAMES
from ..options import option

DTYPES = ("auto", *DTYPE_NAMES)


@dataclass
class Output:
    """The output folder and its format.

    Args:
        dir (`str`): the output folder; it appears only once complete.
        dtype (`str`, *optional*, defaults to `"auto"`): `float32`, `float16`, `bfloat16`, or the first ingredient's.
        max_shard_size (`str`, *optional*, defaults to `"5GB"`): larger outputs are split into indexed shards.
        overwrite (`bool`, *optional*): replace an earlier hfsoup output at `dir` (never any other folder).
    """

    dir: str = option(kind=schema.string(), flag="-o/--output", metavar="DIR", help="output folder (must not exist)")
    dtype: str = option("auto", kind=schema.one_of(DTYPES), help="output dtype")
    max_shard_size: str = option(DEFAULT_MAX_SHARD_SIZE, kind=schema.size(), help="largest shard, e.g. 5GB, 500MB")
    overwrite: bool = option(
        False,
        kind=schema.boolean(),
        help="replace an earlier hfsoup output at the output path (never any other folder)",
    )
