"""What every layer may use and none owns: the settings (``config``), metrics, logs, tracing and the
garbage collector's tuning. It imports nothing else of the server."""
