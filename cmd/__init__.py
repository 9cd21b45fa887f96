"""Entry points of the platform's binaries (console scripts in pyproject.toml)."""
