"""Wiring and start-up: ``wiring.create_server`` builds the store, services, edges and background tasks
from a ``Config`` and starts them; ``startup`` holds the checks and settings applied before it (TLS,
logging, the open-mode refusal)."""
