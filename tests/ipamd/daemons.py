"""Real tke-ipamd processes for these tests: the shared helper of tke.internal.testing."""

from tke.internal.testing.ipamd_daemon import IpamdProcess

__all__ = ["IpamdProcess"]
