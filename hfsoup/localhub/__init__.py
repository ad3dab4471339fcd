"""The local Hub: a Hugging Face Hub-compatible HTTP server users run (`hfsoup hub serve`) and the tests use.

A product, not a fixture: the standard library and `hfsoup.errors` only (neither hfsoup's ML stack nor
`huggingface_hub`), and nothing here imports `hfsoup.testing`. Start it with `LocalHubServer` (server.py).

Modules:
    server.py       `LocalHubServer`: the HTTP server, routing, and the answers `huggingface_hub` expects
    protocol.py     the request/response model every endpoint shares, and their common helpers
    reads.py        read endpoints: repo info, tree and paths listings, refs, commits, file resolution, whoami
    listing.py      listings: `list_models`/`list_datasets`/`list_spaces` (the model tree's tags), `hf repos ls`
    discussions.py  discussions and pull requests: `create_pr` commits, comments, status, merge
    writes.py       write endpoints: repos (create, delete, duplicate, move, squash), settings, branches, tags,
                    the upload protocol, README validation
    store.py        file-backed storage: repos, branches, tags, commits, discussions, content-addressed blobs
                    and their collection
    access.py       who may do what: tokens, users, organizations, signed LFS transfer URLs
    cards.py        the Hub's checks on a model card's YAML metadata
    faults.py       `FaultPlan`: injected failures (errors, delays, cut or corrupted bodies) for tests of a bad network
"""
