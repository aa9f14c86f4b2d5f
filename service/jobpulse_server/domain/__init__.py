"""The domain: jobs, chunks and their state machine, errors, the caller (principal), list filters,
change events, ids and the clock. Plain Python: it imports nothing else of the server, no database
driver, no gRPC and no generated protobuf code."""
