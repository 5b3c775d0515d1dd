"""The webhook bench's receiver: takes any POST and answers 200 once it has read the body,
served as the services serve their apps (uvicorn, one worker, uvloop and httptools). The
dispatcher and the bare httpx client of `make bench`'s webhooks section both POST to it."""

import os
from typing import Any

import uvicorn

from services.api.settings import SERVER


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # the whole body, as a receiver that verifies a signature must read it
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["BENCH_PORT"]), **SERVER)
