"""Errors the command line turns into a one-line message and exit status 2 (never a traceback)."""


class UsageError(Exception):
    """A user mistake tied to a command-line flag: ``UsageError("--lr", "must be > 0, got -1")``."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or does not match the model it is loaded into."""
