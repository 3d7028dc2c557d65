"""OpenMRS custom representations: `v=custom:(uuid,mappings:(conceptReferenceTerm:(code)))`.

A custom view names the properties wanted; a nested property carries its own list, resolved against
the nested resource's properties (not against what the default view would show of it).
"""

from __future__ import annotations

from typing import Any

CUSTOM_PREFIX = "custom:"

# property name -> its own property list (None: the value as is)
Fields = dict[str, "Fields | None"]


class CustomRepError(ValueError):
    """A malformed custom view, or one naming a property the resource does not have."""


def parse_custom(view: str) -> Fields | None:
    """The property tree of a `custom:(...)` view; None for any other view."""
    if not view.startswith(CUSTOM_PREFIX):
        return None
    text = view[len(CUSTOM_PREFIX) :]
    fields, end = _property_list(text, 0)
    if end != len(text):
        raise CustomRepError(f"unexpected text after the property list: {text[end:]!r}")
    return fields


def _property_list(text: str, at: int) -> tuple[Fields, int]:
    """Parse `(a,b:(c),d)` starting at `at`; returns the tree and the index after `)`."""
    if text[at : at + 1] != "(":
        raise CustomRepError(f"expected '(' at {at} of {text!r}")
    at += 1
    fields: Fields = {}
    while True:
        end = at
        while end < len(text) and text[end] not in ",():":
            end += 1
        name = text[at:end].strip()
        if not name:
            raise CustomRepError(f"empty property name at {at} of {text!r}")
        at, nested = end, None
        if text[at : at + 1] == ":":
            nested, at = _property_list(text, at + 1)
        fields[name] = nested
        if text[at : at + 1] == ",":
            at += 1
        elif text[at : at + 1] == ")":
            return fields, at + 1
        else:
            raise CustomRepError(f"expected ',' or ')' at {at} of {text!r}")


def project(value: Any, fields: Fields | None) -> Any:
    """`value` (a resource's complete properties, lists of them, or a plain value) cut to `fields`."""
    if fields is None or value is None:
        return value
    if isinstance(value, list):
        return [project(item, fields) for item in value]
    if not isinstance(value, dict):
        raise CustomRepError(f"a plain value has no properties {sorted(fields)}")
    for name in fields:
        if name not in value:
            raise CustomRepError(f"Unknown property: {name}")
    return {name: project(value[name], nested) for name, nested in fields.items()}
