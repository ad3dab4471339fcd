"""Test and demo support: a local Hub-compatible server, tiny model families, a float64 soup reference.

Modules are imported directly (`from hfsoup.localhub.server import LocalHubServer`) so that importing the server,
which needs only the standard library, never pulls in torch or transformers.
"""
