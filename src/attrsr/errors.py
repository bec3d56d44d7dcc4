"""The one exception type that the CLI turns into a one-line message and exit code 1.

Raise :class:`AttrsrError` for anything the *user* can fix (bad file, wrong scale, window out of
bounds, config typo). The message names the offending file/value and says what to do. Bugs stay
ordinary exceptions with tracebacks.
"""


class AttrsrError(Exception):
    """A user-facing error: its message is printed alone, without a traceback."""
