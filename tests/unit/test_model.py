"""The tests' own reading of the spec must give the vectors too, or it cannot judge the system."""

from __future__ import annotations

from typing import Any

import pytest

from tests import vectors
from tests.model import Model


@pytest.mark.parametrize("scenario", vectors.scenarios(), ids=lambda s: s["name"])
def test_model_reproduces_scenario(scenario: dict[str, Any]) -> None:
    model = Model(vectors.now())
    for event in scenario["events"]:
        model.apply(event)
    assert model.expected() == scenario["expected"]
