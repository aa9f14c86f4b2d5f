"""Alembic environment: runs on the connection the server hands over (see store/engine.py)."""

from __future__ import annotations

from alembic import context

from jobpulse_server.store.tables import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "jobpulse migrations run through the server: `jobpulse serve` applies them at start-up"
    )

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
