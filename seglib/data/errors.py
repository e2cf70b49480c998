"""The errors seglib.data raises: each message names the file(s), what was expected and what was found."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data; the message names the file(s), the expected and the found."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The dataset folder is missing or holds no image/mask pairs."""
