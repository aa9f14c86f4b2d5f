"""The HTTP edge: one port beside gRPC, on the same event loop (Starlette served by uvicorn).

Server-Sent Events of one job and of the caller's feed (fed by the same watch services as WatchJob
and WatchJobs), events tokens for browsers, CORS, the probes and /metrics.
"""
