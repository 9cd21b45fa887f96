"""Audit sinks (entry point group tke.audit)."""
