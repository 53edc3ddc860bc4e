"""The project's one exception type for mistakes in what a user handed us.

A ``UserError`` is a bad config value, a missing or malformed data file, an
unusable run directory: the entry points print it as one line ``error: ...`` and
exit with status 2, before any expensive work where possible. Every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message names the key, file or value and what is allowed."""
