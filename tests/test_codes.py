"""The wrap-up code catalogue: parsing, resolution order, ambiguity, suggestions."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapup_batch.codes import CodeCatalog, WrapupCode, code_from_json, normalise_name
from wrapup_batch.models import Status

SALES = WrapupCode("5a1e0c7e-3f7e-4a57-9b1c-2d1f0b6e8a01", "Sales", "div-home", "Home")
SALE_LOST = WrapupCode("5a1e0c7e-3f7e-4a57-9b1c-2d1f0b6e8a02", "Sale Lost", "div-home", "Home")
BILLING = WrapupCode(
    "5a1e0c7e-3f7e-4a57-9b1c-2d1f0b6e8a03", "Billing  Question", "div-home", "Home"
)
CALLBACK = WrapupCode("5a1e0c7e-3f7e-4a57-9b1c-2d1f0b6e8a04", "Callback Requested")


@pytest.fixture
def catalog() -> CodeCatalog:
    return CodeCatalog([SALES, SALE_LOST, BILLING, CALLBACK])


# --- code_from_json ---------------------------------------------------------------------------


def test_code_from_json_reads_the_api_entity() -> None:
    entity = {
        "id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "name": "Complaint - Billing",
        "division": {
            "id": "7c0a1b9e-2f55-4d3e-9a1b-6c6f2b1c0d11",
            "name": "Customer Care",
            "selfUri": "/api/v2/authorization/divisions/7c0a1b9e-2f55-4d3e-9a1b-6c6f2b1c0d11",
        },
        "description": "Billing complaints",
        "dateCreated": "2025-03-01T08:00:00Z",
        "createdBy": "c3a7...",
        "selfUri": "/api/v2/routing/wrapupcodes/0f8fad5b-d9cb-469f-a165-70867728950e",
    }
    assert code_from_json(entity) == WrapupCode(
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "Complaint - Billing",
        "7c0a1b9e-2f55-4d3e-9a1b-6c6f2b1c0d11",
        "Customer Care",
    )


def test_code_from_json_without_division() -> None:
    assert code_from_json({"id": "a", "name": "X", "division": None}) == WrapupCode("a", "X")
    assert code_from_json({"id": "a", "name": "X"}) == WrapupCode("a", "X")


@pytest.mark.parametrize("entity", [{}, {"name": "X"}, {"id": "", "name": "X"}, {"id": 7}])
def test_code_from_json_needs_an_id(entity: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="without an id"):
        code_from_json(entity)


# --- resolve ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SALES.id, SALES),
        (SALES.id.upper(), SALES),
        ("{" + SALES.id.upper() + "}", SALES),
        ("Sales", SALES),
        ("Sale Lost", SALE_LOST),
        ("sales", SALES),
        ("  SALE   lost ", SALE_LOST),
        ("billing question", BILLING),  # the org's name has two spaces
        ("Billing  Question", BILLING),
        ("callback\trequested", CALLBACK),
    ],
)
def test_resolve_hits(catalog: CodeCatalog, value: str, expected: WrapupCode) -> None:
    resolution = catalog.resolve(value)
    assert resolution.code == expected
    assert resolution.status is None
    assert resolution.message == ""


def test_exact_name_wins_over_case_insensitive_match() -> None:
    upper = WrapupCode("id-upper", "Sales", "d1", "East")
    lower = WrapupCode("id-lower", "sales", "d2", "West")
    catalog = CodeCatalog([upper, lower])
    assert catalog.resolve("Sales").code == upper
    assert catalog.resolve("sales").code == lower


def test_codes_differing_only_in_case_are_ambiguous_for_a_third_spelling() -> None:
    catalog = CodeCatalog(
        [
            WrapupCode("id-upper", "Sales", "d1", "East"),
            WrapupCode("id-lower", "sales", "d2", "West"),
        ]
    )
    resolution = catalog.resolve("SALES")
    assert resolution.code is None
    assert resolution.status is Status.AMBIGUOUS_CODE
    for part in ("id-upper", "id-lower", "East", "West", "use the code id"):
        assert part in resolution.message


def test_duplicate_names_across_divisions_are_ambiguous() -> None:
    catalog = CodeCatalog([WrapupCode("a", "Resolved", "d1"), WrapupCode("b", "Resolved", "d2")])
    resolution = catalog.resolve("Resolved")
    assert resolution.status is Status.AMBIGUOUS_CODE
    assert '"Resolved" id a in division d1' in resolution.message
    assert '"Resolved" id b in division d2' in resolution.message
    # the id still picks one
    assert catalog.resolve("b").code == WrapupCode("b", "Resolved", "d2")


def test_the_same_code_seen_twice_is_not_ambiguous() -> None:
    # pages that shift while paging can return a code twice
    catalog = CodeCatalog([SALES, SALE_LOST, SALES])
    assert len(catalog) == 2
    assert catalog.resolve("Sales").code == SALES


def test_an_id_wins_over_a_name() -> None:
    weird = WrapupCode("x-1", SALES.id)  # a code *named* like another code's id
    catalog = CodeCatalog([SALES, weird])
    assert catalog.resolve(SALES.id).code == SALES


def test_unknown_name_suggests_the_closest_names(catalog: CodeCatalog) -> None:
    resolution = catalog.resolve("Sale")
    assert resolution.code is None
    assert resolution.status is Status.UNKNOWN_CODE
    assert resolution.message == (
        'no wrap-up code named "Sale" in the org; did you mean "Sales", "Sale Lost"?'
    )


def test_suggestions_are_at_most_three() -> None:
    names = ["Sales A", "Sales B", "Sales C", "Sales D", "Sales E"]
    catalog = CodeCatalog(WrapupCode(f"id{i}", n) for i, n in enumerate(names))
    message = catalog.resolve("Sales").message
    assert message.count('"Sales ') == 3


def test_unknown_without_close_names_says_how_to_list_codes(catalog: CodeCatalog) -> None:
    resolution = catalog.resolve("Zebra crossing")
    assert resolution.status is Status.UNKNOWN_CODE
    assert "did you mean" not in resolution.message
    assert "wrapup-batch codes" in resolution.message


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_value_is_unknown(catalog: CodeCatalog, value: str) -> None:
    assert catalog.resolve(value).status is Status.UNKNOWN_CODE


def test_unknown_id_is_unknown(catalog: CodeCatalog) -> None:
    resolution = catalog.resolve(str(uuid.uuid4()))
    assert resolution.status is Status.UNKNOWN_CODE


def test_empty_catalog() -> None:
    catalog = CodeCatalog([])
    assert len(catalog) == 0
    assert list(catalog) == []
    assert catalog.resolve("Sales").status is Status.UNKNOWN_CODE


def test_resolve_is_repeatable(catalog: CodeCatalog) -> None:
    first = catalog.resolve("sales")
    assert catalog.resolve("sales") == first
    assert catalog.resolve("Sale").status is Status.UNKNOWN_CODE
    assert catalog.resolve("Sale").status is Status.UNKNOWN_CODE


# --- get, name_of, iteration, search ----------------------------------------------------------


def test_get_and_name_of(catalog: CodeCatalog) -> None:
    assert catalog.get(SALES.id) == SALES
    assert catalog.get(SALES.id.upper()) == SALES
    assert catalog.get("nope") is None
    assert catalog.name_of(SALES.id) == "Sales"
    assert catalog.name_of("nope") == "nope"
    assert catalog.name_of(None) == ""


def test_iteration_is_sorted_by_name(catalog: CodeCatalog) -> None:
    assert [c.name for c in catalog] == [
        "Billing  Question",
        "Callback Requested",
        "Sale Lost",
        "Sales",
    ]
    assert len(catalog) == 4


def test_iteration_sorts_ignoring_case() -> None:
    catalog = CodeCatalog(
        [WrapupCode("1", "beta"), WrapupCode("2", "Alpha"), WrapupCode("3", "gamma")]
    )
    assert [c.name for c in catalog] == ["Alpha", "beta", "gamma"]


def test_search(catalog: CodeCatalog) -> None:
    assert catalog.search("SALE") == [SALE_LOST, SALES]
    assert catalog.search("billing question") == [BILLING]
    assert catalog.search("nothing") == []
    assert catalog.search("") == list(catalog)


# --- properties --------------------------------------------------------------------------------

_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789éÉüÜß-&/ "
_names = st.text(alphabet=_NAME_CHARS, min_size=1, max_size=20).filter(lambda s: s.strip() != "")


@st.composite
def _variant(draw: st.DrawFn, name: str) -> str:
    """The name with each letter's case flipped at will and whitespace runs changed."""
    words = name.split()
    cased = ["".join(draw(st.sampled_from([c.lower(), c.upper()])) for c in w) for w in words]
    gaps = [draw(st.sampled_from([" ", "  ", "\t", " \t "])) for _ in range(len(words) - 1)]
    out = draw(st.sampled_from(["", " ", "  "]))
    for word, gap in zip(cased, [*gaps, ""], strict=True):
        out += word + gap
    return out + draw(st.sampled_from(["", " ", "\t"]))


@settings(max_examples=150, deadline=None)
@given(names=st.lists(_names, min_size=1, max_size=8, unique_by=normalise_name), data=st.data())
def test_resolve_ignores_case_and_whitespace_runs(names: list[str], data: st.DataObject) -> None:
    codes = [WrapupCode(str(uuid.UUID(int=i + 1)), name) for i, name in enumerate(names)]
    catalog = CodeCatalog(codes)
    for code in codes:
        value = data.draw(_variant(code.name), label=f"variant of {code.name!r}")
        resolution = catalog.resolve(value)
        assert resolution.code == code, resolution.message
        assert catalog.resolve(code.name).code == code
        assert catalog.resolve(code.id).code == code
