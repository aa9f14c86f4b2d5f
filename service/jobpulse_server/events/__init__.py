"""Change events: the in-process change hub that wakes watchers and waiting claims, and the
PostgreSQL listener that feeds it with other replicas' commits. Depends on the domain only."""
