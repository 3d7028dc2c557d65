"""The emulator's custom representations: parsing `custom:(...)` and cutting a resource down to it."""

from __future__ import annotations

import pytest

from tm2_pipeline.openmrs.emulator.custom_rep import CustomRepError, parse_custom, project


def test_nested_property_lists_parse_into_a_tree() -> None:
    view = "custom:(uuid, display,mappings:(conceptReferenceTerm:(code,conceptSource:(uuid))),x)"
    tree = parse_custom(view)
    assert tree == {
        "uuid": None,
        "display": None,
        "mappings": {"conceptReferenceTerm": {"code": None, "conceptSource": {"uuid": None}}},
        "x": None,
    }
    assert parse_custom("full") is None and parse_custom("") is None


@pytest.mark.parametrize("view", ["custom:", "custom:uuid", "custom:(uuid", "custom:(uuid,)", "custom:(a)b"])
def test_malformed_views_are_refused(view: str) -> None:
    with pytest.raises(CustomRepError):
        parse_custom(view)


def test_projection_keeps_what_is_named_through_lists_and_refuses_unknown_properties() -> None:
    concept = {
        "uuid": "k-1",
        "name": {"display": "Vata disorder"},
        "mappings": [{"uuid": "m-1", "term": {"code": "SK00", "name": None}}, {"uuid": "m-2", "term": None}],
    }
    fields = parse_custom("custom:(uuid,mappings:(term:(code)))")
    expected = {"uuid": "k-1", "mappings": [{"term": {"code": "SK00"}}, {"term": None}]}
    assert project(concept, fields) == expected
    with pytest.raises(CustomRepError, match="Unknown property: voided"):
        project(concept, parse_custom("custom:(uuid,voided)"))
    with pytest.raises(CustomRepError):
        project(concept, parse_custom("custom:(uuid:(x))"))
