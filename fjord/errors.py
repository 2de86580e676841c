"""The errors Fjord raises on purpose.

Every error a user can act on derives from :class:`FjordError`. The CLI prints ``str(error)`` as one
line (plus the hint) and exits with ``error.exit_code``; anything else is a bug and gets a traceback.
"""

from __future__ import annotations


class FjordError(Exception):
    """Root of Fjord's errors: a message a user can act on, an optional hint and an exit code."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint on one line, as the CLI prints them."""
        text = " ".join(str(self).split())
        return f"{text} (hint: {self.hint})" if self.hint else text


class ConfigError(FjordError):
    """A setting is unknown, malformed or missing."""

    exit_code = 2


class NotFoundError(FjordError):
    """A named thing (project, environment, run, artifact) does not exist."""

    exit_code = 3


class AlreadyExistsError(FjordError):
    """Creating something that already exists."""

    exit_code = 4


class PathEscapeError(FjordError, PermissionError):
    """A path resolves outside the root it must stay in."""

    exit_code = 5


class InvalidNameError(FjordError, ValueError):
    """A name (project, environment, dataset) breaks the naming rules."""

    exit_code = 2


class EnvironmentBuildError(FjordError):
    """A project environment spec is malformed or does not resolve."""

    exit_code = 6


class SparkError(FjordError):
    """Spark cannot start (no Java, bad master, bad settings)."""

    exit_code = 7


class StorageFullError(FjordError):
    """The filesystem ran out of space during a publish: nothing was published (retrying after space
    is freed publishes it whole)."""

    exit_code = 21


def storage_full(exc: BaseException, where: str) -> StorageFullError | None:
    """``exc`` as a :class:`StorageFullError` if it is a full disk (ENOSPC, EDQUOT), else None."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"{where} is full ({exc.strerror}): nothing was published", hint="free space and run it again"
        )
    return None


class MetadataUnavailableError(FjordError):
    """The metadata database dropped or refused the connection (a restart, an outage): what was being
    published is all or nothing, and a rerun completes it."""

    exit_code = 22


def known_failure(exc: BaseException) -> FjordError | None:
    """A library's exception that has a one-line meaning for users, as a :class:`FjordError`."""
    try:
        from sqlalchemy.exc import InterfaceError, OperationalError
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return None
    if isinstance(exc, OperationalError | InterfaceError):
        cause = " ".join(str(exc.orig or exc).split("\n")[0].split())[:300]
        return MetadataUnavailableError(
            f"the metadata database dropped or refused the connection: {cause}",
            hint="once it answers again, run the same command again: nothing was half published",
        )
    return None


class ServiceError(FjordError):
    """An embedded server (PostgreSQL, Redis, Kafka, HDFS, S3) cannot start, or a JVM jar is missing."""

    exit_code = 11
