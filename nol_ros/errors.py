"""Exceptions of nol_ros.

Every error the project raises on bad input is a :class:`NolError`. Its message names what was
wrong and what to do about it; nodes turn it into an error code + message in their replies.
"""


# A message in a reply, a job status or a log line is cut to this many characters: a reply stays
# small whatever a request put into it (a 100 kB object name is echoed in its error).
MAX_MESSAGE_CHARS = 2000


def clip_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text``, or its first ``limit`` characters and a note of how many were cut."""
    if len(text) <= limit:
        return text
    note = f" ... [{len(text) - limit} more characters cut]"
    return text[:limit - len(note)] + note


class NolError(Exception):
    """Base class: bad input or a state the user can fix. ``code`` is a short stable string.
    Its message is cut to MAX_MESSAGE_CHARS (:func:`clip_message`)."""

    code = "NOL_ERROR"

    def __str__(self) -> str:
        return clip_message(super().__str__())


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
