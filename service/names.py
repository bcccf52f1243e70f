"""What models and datasets share: the name rule and creation-order pagination."""

import itertools
import re
import uuid

from .errors import InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "check_id", "check_name", "new_id", "page_after",
           "page_of"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,62}")
_ID_FORM = re.compile(r"[0-9a-fA-F]{32}")  # uuid4().hex; names may not take this form
_ID = re.compile(r"[0-9a-f]{32}")  # the ids the server hands out, and the ones it accepts
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def check_name(field, name):
    """Raise InvalidArgument unless `name` is a valid name (never one that looks like an id)."""
    if not _NAME.fullmatch(name) or _ID_FORM.fullmatch(name):
        raise InvalidArgument(
            f"{field}: got {name!r}, expected 1 to 63 characters from [A-Za-z0-9._-] starting "
            "with a letter, not 32 hexadecimal digits (the form of ids)")


def new_id():
    """A fresh random id (uuid4().hex)."""
    return uuid.uuid4().hex


def check_id(field, model_id):
    """Raise InvalidArgument unless `model_id` has the form of the server's ids."""
    if not _ID.fullmatch(model_id):
        raise InvalidArgument(f"{field}: got {model_id!r}, expected 32 lowercase hexadecimal "
                              "digits (e.g. uuid.uuid4().hex)")


def page_after(page_size, page_token, response):
    """(sequence after which the page starts, page size) of a List request."""
    if page_size < 0:
        raise InvalidArgument(f"page_size: got {page_size}, expected a number >= 0 (0: {DEFAULT_PAGE_SIZE})")
    if page_token and not (len(page_token) <= 18 and page_token.isascii() and page_token.isdigit()):
        raise InvalidArgument(f"page_token: got {page_token!r}, expected empty or the "
                              f"next_page_token of a previous {response}")
    return int(page_token or 0), min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def page_of(items, after, size):
    """(page, next_page_token): the first `size` of `items` (in creation order, each with a
    `sequence`) that come after sequence `after`; the token is "" on the last page."""
    # Stop one past the page to know whether more follow.
    page = list(itertools.islice((item for item in items if item.sequence > after), size + 1))
    if len(page) > size:
        return page[:size], str(page[size - 1].sequence)
    return page, ""
