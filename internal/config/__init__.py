"""Configuration files: TOML into typed dataclasses."""
