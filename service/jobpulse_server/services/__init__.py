"""Use cases: jobs, workers and leases (with the sweeper), watch and feed, webhooks and their outbox,
authentication and rate limits. They take a store and the caller's principal as arguments and know
nothing of gRPC or generated protobuf code; the api layer maps messages to their commands."""
