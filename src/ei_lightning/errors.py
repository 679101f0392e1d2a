"""Errors the user can fix: their message names the offending value and what is accepted."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot work; raised before any training starts."""


class DataSourceError(ConfigError):
    """The data could not be found or failed verification; the message says how to get it."""
