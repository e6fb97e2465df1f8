"""The org's wrap-up code catalogue and the resolution of a row's code (a name or an id).

Pure: the catalogue is built from the entities of `GET /api/v2/routing/wrapupcodes` (all pages,
fetched elsewhere) and answers every lookup from dicts built once, in O(n).

A value resolves, in this order, to:
1. a code id: exact, or in another spelling of the same uuid (upper case, braces, spaces);
2. a code name, exactly as given;
3. a code name ignoring case and surrounding or repeated whitespace.
More than one code at the first level that matches makes the value ambiguous (names are unique
per org, but a client can see codes that differ only in case, or duplicates across divisions).
A value that matches nothing is unknown, and the message suggests the closest names.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from wrapup_batch.models import Status

__all__ = ["CodeCatalog", "Resolution", "WrapupCode", "code_from_json", "normalise_name"]

_MAX_SUGGESTIONS = 3
_SUGGESTION_CUTOFF = 0.6
_LIST_HINT = "list the org's codes with `wrapup-batch codes`"
_CACHE_LIMIT = 10_000  # distinct values remembered; bounded so memory never grows with the input


@dataclass(frozen=True, slots=True)
class WrapupCode:
    """One wrap-up code of the org."""

    id: str
    name: str
    division_id: str | None = None
    division_name: str | None = None


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of resolving one value: a code, or a status and a message for a person."""

    code: WrapupCode | None
    status: Status | None
    message: str


def code_from_json(entity: Mapping[str, Any]) -> WrapupCode:
    """Build a code from one entity of `GET /api/v2/routing/wrapupcodes` (camelCase JSON)."""
    code_id = entity.get("id")
    if not isinstance(code_id, str) or not code_id:
        raise ValueError(f"wrap-up code entity without an id: {dict(entity)!r}")
    name = entity.get("name")
    division = entity.get("division")
    if not isinstance(division, Mapping):
        division = {}
    return WrapupCode(
        id=code_id,
        name=name if isinstance(name, str) else "",
        division_id=_str_or_none(division.get("id")),
        division_name=_str_or_none(division.get("name")),
    )


def normalise_name(value: str) -> str:
    """A name for the case- and space-insensitive match: casefolded, whitespace runs collapsed."""
    return " ".join(value.split()).casefold()


def _normalise_id(value: str) -> str:
    return value.strip().strip("{}").strip().lower()


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class CodeCatalog:
    """The wrap-up codes visible to this client, indexed by id, name and normalised name."""

    def __init__(self, codes: Iterable[WrapupCode]) -> None:
        # Keyed by id: a code seen twice (pages that shifted while paging) counts once.
        self._by_id: dict[str, WrapupCode] = {}
        for code in codes:
            self._by_id[code.id] = code
        self._by_norm_id: dict[str, list[WrapupCode]] = {}
        self._by_name: dict[str, list[WrapupCode]] = {}
        self._by_norm_name: dict[str, list[WrapupCode]] = {}
        for code in self._by_id.values():
            self._by_norm_id.setdefault(_normalise_id(code.id), []).append(code)
            self._by_name.setdefault(code.name, []).append(code)
            self._by_norm_name.setdefault(normalise_name(code.name), []).append(code)
        self._sorted: tuple[WrapupCode, ...] | None = None
        self._cache: dict[str, Resolution] = {}

    def resolve(self, value: str) -> Resolution:
        """Resolve a row's `wrapup_code` (an id or a name) to one code, or say why not."""
        cached = self._cache.get(value)
        if cached is None:
            cached = self._resolve(value)
            if len(self._cache) < _CACHE_LIMIT:
                self._cache[value] = cached
        return cached

    def _resolve(self, value: str) -> Resolution:
        if not value.strip():
            return Resolution(None, Status.UNKNOWN_CODE, "the wrap-up code is empty")
        code = self._by_id.get(value)
        if code is not None:
            return Resolution(code, None, "")
        levels = (
            self._by_norm_id.get(_normalise_id(value)),
            self._by_name.get(value),
            self._by_norm_name.get(normalise_name(value)),
        )
        for matches in levels:
            if matches:
                return _one_or_ambiguous(value, matches)
        return self._unknown(value)

    def _unknown(self, value: str) -> Resolution:
        close = difflib.get_close_matches(
            normalise_name(value),
            list(self._by_norm_name),
            n=_MAX_SUGGESTIONS,
            cutoff=_SUGGESTION_CUTOFF,
        )
        names = [self._by_norm_name[norm][0].name for norm in close]
        message = f"no wrap-up code named {_quote(value)} in the org"
        if names:
            message += "; did you mean " + ", ".join(_quote(name) for name in names) + "?"
        else:
            message += f"; {_LIST_HINT}"
        return Resolution(None, Status.UNKNOWN_CODE, message)

    def get(self, code_id: str) -> WrapupCode | None:
        """The code with this id (any spelling of the uuid), or None."""
        code = self._by_id.get(code_id)
        if code is None:
            matches = self._by_norm_id.get(_normalise_id(code_id))
            code = matches[0] if matches and len(matches) == 1 else None
        return code

    def name_of(self, code_id: str | None) -> str:
        """The name of the code with this id; the id itself when unknown; "" for None."""
        if code_id is None:
            return ""
        code = self.get(code_id)
        return code.name if code is not None else code_id

    def search(self, text: str) -> list[WrapupCode]:
        """Codes whose name contains `text`, ignoring case and repeated spaces, sorted by name."""
        needle = normalise_name(text)
        return [code for code in self if needle in normalise_name(code.name)]

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[WrapupCode]:
        if self._sorted is None:
            self._sorted = tuple(
                sorted(self._by_id.values(), key=lambda c: (c.name.casefold(), c.name, c.id))
            )
        return iter(self._sorted)


def _one_or_ambiguous(value: str, matches: list[WrapupCode]) -> Resolution:
    if len(matches) == 1:
        return Resolution(matches[0], None, "")
    candidates = "; ".join(_describe(code) for code in sorted(matches, key=lambda c: c.id))
    message = (
        f"wrap-up code {_quote(value)} is ambiguous: it matches {len(matches)} codes "
        f"({candidates}); use the code id instead"
    )
    return Resolution(None, Status.AMBIGUOUS_CODE, message)


def _describe(code: WrapupCode) -> str:
    division = code.division_name or code.division_id or "unknown division"
    return f"{_quote(code.name)} id {code.id} in division {division}"


def _quote(text: str) -> str:
    return '"' + text.replace('"', '\\"') + '"'
