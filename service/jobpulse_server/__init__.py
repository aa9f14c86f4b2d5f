"""The jobpulse server: a grpc.aio service tracking jobs split into chunks."""

__all__ = ["__version__"]

__version__ = "0.1.0"
