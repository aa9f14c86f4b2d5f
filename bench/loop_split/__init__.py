"""Where a server's event loop spends its CPU per call: ``python -m bench.loop_split`` (see __main__)."""
