"""Errors that reach the user as one clear line instead of a traceback."""


class UserError(Exception):
    """A mistake the user can fix: the message names the file, line, host or flag and what to do."""


class StageRefused(UserError):
    """A stage declined to start (for example not enough disk); the message says the numbers."""
