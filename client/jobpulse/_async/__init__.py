"""The SDK's async half, the source of both: ``scripts/unasync.py`` writes ``jobpulse._sync`` from it."""
