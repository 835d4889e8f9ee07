"""The one exception tree of swarmgate (pure: no I/O).

Callers tell three outcomes apart: bad operator input (`ConfigError`, exit 2 before anything in the
Swarm changes), failures worth retrying (`TemporaryError`, retried with backoff by the loop) and
failures that retrying cannot fix (`TerminalError`, logged and counted, not retried).
"""


class SwarmgateError(Exception):
    """Root of every error swarmgate raises on purpose."""


class ConfigError(SwarmgateError):
    """The operator's configuration (TOML file, state file, CLI input) is invalid.

    The message is one line a user can act on: which file, which key, what was expected.
    """


class DocumentError(SwarmgateError):
    """An Engine API document (live, or from a state file) does not have the shape the API defines.

    Where it came from decides what it means: a state file is user input (`ConfigError`, exit 2); a
    live answer from Docker is a `TerminalError` of that pass (retrying the same call gives the same
    document).
    """


class RenderError(SwarmgateError):
    """A value could not be written into the proxy's configuration safely (one extension's problem)."""


class TemporaryError(SwarmgateError):
    """A failure that the next attempt may not see: API error, version conflict, lost connection."""


class TerminalError(SwarmgateError):
    """A failure that retrying will not fix; the loop logs and counts it and waits for a change."""
