"""What both edges (gRPC in api/, HTTP in http/) share: domain objects as jobpulse.v1 messages, request
shape checks, the ListJobs-style filters, and which canonical status each domain error is."""
