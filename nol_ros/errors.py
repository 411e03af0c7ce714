"""Exceptions of nol_ros.

Every error the project raises on bad input is a :class:`NolError`. Its message names what was
wrong and what to do about it; nodes turn it into an error code + message in their replies.
"""


class NolError(Exception):
    """Base class: bad input or a state the user can fix. ``code`` is a short stable string."""

    code = "NOL_ERROR"


class InputError(NolError):
    """An argument, file or message does not have the expected content."""

    code = "BAD_INPUT"


class FileFormatError(InputError):
    """A file is missing, unreadable or misses a key; the message names the file and key."""

    code = "BAD_FILE"


class ConfigError(NolError):
    """A configuration value is invalid."""

    code = "BAD_CONFIG"


class ServiceUnavailableError(NolError):
    """Another part of the system a request needs is not there (e.g. no reconstruction node to
    export the live buffer)."""

    code = "SERVICE_UNAVAILABLE"


class PoseError(InputError):
    """A requested pose is not a finite rigid transform in front of the camera."""

    code = "BAD_POSE"


def error_for_code(code: str, message: str) -> NolError:
    """The error ``code`` + ``message`` (a per-object entry of a report) as an exception of the
    class that defines that code (the first loaded :class:`NolError` subclass that does; a
    NolError carrying the code when none does), so that callers still tell bad input (an
    InputError: exit 2) from a failure."""
    todo = [NolError]
    while todo:
        cls = todo.pop(0)
        if cls.__dict__.get("code") == code:
            try:
                return cls(message)
            except TypeError:   # another constructor
                break
        todo.extend(cls.__subclasses__())
    err = NolError(message)
    err.code = code
    return err
