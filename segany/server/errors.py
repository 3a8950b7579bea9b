"""Errors the app answers with their own HTTP status (other SegAnyErrors are 422)."""

from ..errors import SegAnyError


class NotFound(SegAnyError):
    """No such image or mask (404)."""


class Conflict(SegAnyError):
    """A change that lost a race: the mask changed since the client read it (409)."""
