"""The library's exceptions: one small hierarchy, messages that say what to do.

Every error the user can cause derives from :class:`SecureFedsaError`; the CLI turns these into a
one-line message and exit code 2. Messages never contain key material or training data.
"""

from __future__ import annotations


class SecureFedsaError(Exception):
    """Base class: a problem the user can fix. The message says how."""


class ConfigError(SecureFedsaError):
    """The run configuration is invalid or inconsistent."""


class DataError(SecureFedsaError):
    """Input data is missing, malformed, or cannot be split as asked."""


class ModelError(SecureFedsaError):
    """The model directory cannot be loaded or does not fit the requested setup."""


class PrivacyError(SecureFedsaError):
    """Differential-privacy setup or accounting cannot give the promised guarantee."""


class BudgetExhausted(PrivacyError):
    """A client's next round would exceed its privacy budget; it must not train."""


class LedgerError(PrivacyError):
    """A privacy ledger is corrupt, belongs to someone else, or disagrees with the config."""


class ToolMissing(SecureFedsaError):
    """A package this command needs is not installed: a problem with the installation, never
    with the evidence being checked. The message names what to install."""


class CryptoError(SecureFedsaError):
    """Key bundles or encryption parameters are unusable or unsafe."""


class UpdateRejected(SecureFedsaError):
    """The server refused a client update; ``reason`` says why. The aggregate is unchanged."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
