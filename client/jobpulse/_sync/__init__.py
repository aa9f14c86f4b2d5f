"""The SDK's blocking half: ``client.py`` and ``worker.py`` are generated from ``jobpulse._async`` by
``scripts/unasync.py`` (``make unasync``); ``_shim.py`` is written by hand."""
