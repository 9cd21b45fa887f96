"""What a step's failure means, as a type (kopf's lesson): retry later, or give up.

- TemporaryError(delay): the step may succeed later (a machine not reachable yet, a health
  check not passing yet). It is retried after `delay` seconds, or after the step's backoff
  when no delay is given, at most the step's retry budget.
- PermanentError: retrying cannot help (bad credentials, a host key mismatch, an invalid
  spec). The object goes to phase Failed with this message at once.
Any other exception counts as temporary: the framework cannot know, and a bounded number of
retries turns a persistent bug into Failed with the error visible.
"""

from __future__ import annotations


class StepError(Exception):
    """Base of the errors a step raises on purpose."""


class TemporaryError(StepError):
    def __init__(self, message: str, delay: float | None = None) -> None:
        super().__init__(message)
        self.delay = delay


class PermanentError(StepError):
    pass
