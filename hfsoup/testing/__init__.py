"""Test fixtures only: tiny model families and tokenizers, the MiniLM family, a tiny GLUE and digits dataset, a float64
soup reference, the notebook sandbox and the network guard. The local Hub server these use is a product of its own,
`hfsoup.localhub`; nothing outside this folder but the demo imports from it (tests/test_layout_hub.py checks).

Modules are imported directly (`from hfsoup.testing.families import build_family`) so that importing one fixture
never pulls in torch or transformers through another.
"""
