"""Errors the command line turns into a one-line message and exit status 2 (never a traceback)."""


class UsageError(Exception):
    """A user mistake tied to a command-line flag: ``UsageError("--lr", "must be > 0, got -1")``."""

    def __init__(self, flag: str, message: str):
        super().__init__(f"{flag}: {message}")
        self.flag = flag
        self.message = message


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, truncated or does not match the model it is loaded into."""


class CheckpointWriteError(OSError):
    """Writing a file failed (disk full, read-only directory, ...); the message names the file.

    Writes are atomic (:func:`npllm.checkpoint.write_atomic`), so the file that was there before, if any,
    is intact.  ``errno`` is the underlying error's."""

    def __init__(self, path, reason: str, errno: int | None = None):
        super().__init__(f"cannot write {path}: {reason}")
        self.path = path
        self.errno = errno


class EnvironmentVariableError(ValueError):
    """An environment variable npllm reads holds a value it cannot use: ``variable`` names it, so a
    command reports ``NPLLM_BACKEND: ...`` rather than blaming a flag the user never typed."""

    def __init__(self, variable: str, message: str):
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message
