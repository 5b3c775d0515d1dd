"""The spec's scoring vectors (../shared/vectors/scoring.json, beside the checkout)."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

VECTORS_PATH = Path(
    os.environ.get("CL_VECTORS", Path(__file__).resolve().parents[2] / "shared" / "vectors" / "scoring.json")
)


def load() -> dict[str, Any]:
    return json.loads(VECTORS_PATH.read_text())


def scenarios() -> list[dict[str, Any]]:
    return load()["scenarios"]


def now() -> datetime:
    return datetime.fromisoformat(load()["now"].replace("Z", "+00:00"))
