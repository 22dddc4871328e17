"""The one paging rule: 1-based pages of at most 1,000 items, with offsets a database can hold."""

from __future__ import annotations

from .errors import InvalidRequestError

__all__ = ["MAX_PAGE", "MAX_PAGE_SIZE", "page_window"]

MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000_000  # keeps the offset within SQLite's 64-bit integers


def page_window(page: object, page_size: object) -> tuple[int, int]:
    """(limit, offset) for a 1-based page; a 400 naming the bad parameter otherwise."""
    if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
        raise InvalidRequestError(f"'page' must be an integer between 1 and {MAX_PAGE:,}.", param="page")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= MAX_PAGE_SIZE:
        raise InvalidRequestError(f"'page_size' must be an integer between 1 and {MAX_PAGE_SIZE}.",
                                  param="page_size")
    return page_size, (page - 1) * page_size
