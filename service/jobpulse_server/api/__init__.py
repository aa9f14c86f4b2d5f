"""The gRPC edge: one servicer per service, request -> command and result -> message mapping,
request validation, error mapping (domain errors -> status codes with rich details), reflection."""
