"""The resources tkectl manages, one adaptor per kind over its gRPC service (registry.py names
them all)."""
