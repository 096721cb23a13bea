"""Error hierarchy. Every message says what was wrong, where, and how to fix it."""

from __future__ import annotations


class LlmkdError(Exception):
    """Base class of every error llmkd raises on purpose."""


class ConfigError(LlmkdError):
    """A run configuration is invalid (field path, allowed values, value given)."""


class DataError(LlmkdError):
    """An input data file is malformed (file:line and the fix)."""


class TeacherError(LlmkdError):
    """A teacher backend failed (after retries, where the backend retries)."""


class PromptTooLong(TeacherError):
    """One prompt does not fit the teacher's context. Labeling turns it into an abstention of that
    example (reason kept in its provenance) and goes on."""

    def __init__(self, n_tokens: int, extra: int, limit: int, *, server: str = "") -> None:
        super().__init__(server or f"prompt of {n_tokens} tokens plus {extra} more does not fit teacher.n_ctx={limit}; "
                                   "raise teacher.n_ctx (the model's trained context allowing)")
        self.n_tokens, self.extra, self.limit, self.server = n_tokens, extra, limit, server

    @property
    def reason(self) -> str:
        """One line for an example's provenance."""
        if self.server:
            return f"too_long: the server refused the prompt as too long ({self.server[:200]})"
        return f"too_long: {self.n_tokens} prompt tokens + {self.extra} > teacher.n_ctx={self.limit}"


class ModelNotFoundError(LlmkdError):
    """A model name is neither a zoo name, a local path nor a usable hub id."""


class ChecksumError(LlmkdError):
    """An assembled model file does not match its pinned sha256."""


class MissingExtraError(LlmkdError, ImportError):
    """An optional backend is not installed; the message names the extra."""

    def __init__(self, module: str, extra: str, what: str) -> None:
        super().__init__(
            f"{what} needs the Python package '{module}', which is not installed. "
            f"Install it with: pip install 'llmkd[{extra}]'"
        )
        self.module = module
        self.extra = extra


class StateError(LlmkdError):
    """Saved state (the teacher cache, a student checkpoint, a run's JSON files) is missing a part
    or unreadable; the message names the file and what to delete or run to recover."""


class ParseError(LlmkdError):
    """A teacher reply could not be parsed; carries the raw reply. Callers turn it into an abstention."""

    def __init__(self, raw: str, expected: str) -> None:
        short = raw if len(raw) <= 200 else raw[:200] + "..."
        super().__init__(f"could not parse teacher reply {short!r}: expected {expected}")
        self.raw = raw
        self.expected = expected


def require(module: str, extra: str, what: str):
    """Import an optional dependency or raise MissingExtraError naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(module, extra, what) from exc
