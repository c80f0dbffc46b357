"""The pipeline's expected failures: reported as one clear line, never with a traceback."""

from __future__ import annotations


class PipelineError(Exception):
    """Bad input or unusable data; the message names the thing, what it expected and what it got."""


class TransientError(PipelineError):
    """An I/O failure that may succeed when retried (network down, service unavailable)."""
