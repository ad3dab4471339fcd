"""Files in and out: checkpoints read lazily and written as streamed shards, and every bound on what a read accepts.

Nothing here imports torch at import time: the soup engine reads numpy views, and only `checkpoint.py`'s torch
reads (`get`) load torch, on first use.

Modules:
    headers.py      safetensors headers checked by `safetensors`' own rules before any tensor is read
    checkpoint.py   lazy per-tensor reads (numpy views of a memory map) and sharded, streaming safetensors writes
    jsonread.py     the small JSON files of a checkpoint (config, tokenizer, index), refused when hostile
    safeyaml.py     YAML from outside (recipes, sweeps, card front matter), parsed with bounds on aliases and size
    confine.py      paths named by data (shards, config files) kept inside their folder, never through a symlink
    guard.py        what an output folder may never be: an input, or a folder of the user's that it would destroy
    staging.py      output folders written beside their place and moved in only when complete
    soupfolder.py   a finished soup folder read back and checked (for --overwrite, push and the card)
    output.py       `Output`: the output folder's options (dir, dtype, shard size, overwrite), declared once
"""
