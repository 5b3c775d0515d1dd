"""Validators for the schemas of the AsyncAPI document in docs/ (the contract the tests hold
records to)."""

from __future__ import annotations

import json
from functools import cache

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.conftest import ROOT

DOCUMENT = ROOT / "docs" / "asyncapi.json"
_URI = "urn:community-levels:asyncapi"


@cache
def validator(schema: str) -> Draft202012Validator:
    """A validator of `components.schemas.<schema>`, its references resolved in the document."""
    document = json.loads(DOCUMENT.read_text())
    registry = Registry().with_resource(_URI, Resource.from_contents(document, default_specification=DRAFT202012))
    return Draft202012Validator(
        {"$ref": f"{_URI}#/components/schemas/{schema}"},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )
