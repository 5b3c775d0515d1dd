"""The API's baseline: a FastAPI app answering a constant member document, served the way
`python -m services.api` serves the real one (uvicorn.run, one worker, the same options)."""

import os

import uvicorn
from fastapi import FastAPI

from services.api.settings import SERVER

app = FastAPI()

DOCUMENT = {
    "member_id": "m-1",
    "level": {"id": "new_contributor", "name": "New Contributor", "tier": "active", "rank": 4},
    "active_score": 5,
    "passive_score": 12,
    "tenure_days": 3,
    "points": {"reply": 5, "view": 10, "visit_day": 2},
}


@app.get("/v1/members/{member_id}")
async def member(member_id: str) -> dict[str, object]:
    return DOCUMENT


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), **SERVER)
