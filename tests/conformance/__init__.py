"""The store's conformance suite, by topic: every driver mode held to the in-memory FakeStore (rig.py)."""
