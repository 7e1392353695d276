"""Expected failures: each message says what was wrong and what to do about it."""


class GandefectError(Exception):
    """Base class for failures a user can act on (bad input, missing model, failed gate)."""

    exit_code = 1


class BadInputError(GandefectError):
    """Input data or arguments that cannot be used."""

    exit_code = 2


class ConfigError(GandefectError):
    """params.yaml is missing, malformed or names an unknown profile."""

    exit_code = 2


class DataValidationError(GandefectError):
    """A data snapshot failed the Great Expectations data suite."""

    exit_code = 3

    def __init__(self, message: str, report_path=None):
        super().__init__(message)
        self.report_path = report_path


class ToolError(GandefectError):
    """An external tool (git, DVC) failed; the message carries its output."""
