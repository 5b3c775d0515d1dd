"""The whole system as separate processes (ingest, scorer, api) on the real servers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.common.settings import Settings
from tests.conftest import ROOT, env_with
from tests.support import free_port

API_KEY = "e2e-key"


@dataclass
class System:
    """The services as processes; scorers may be several, named scorer, scorer-2, ... (and
    webhook dispatchers webhooks, webhooks-2, ...)"""

    env: dict[str, str]
    logs: Path
    # Each service's own database URL (tests/conftest.py database_urls): the scorer and the api
    # run under their roles of least privilege, as in `make run` and compose.
    database_urls: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    health: dict[str, str] = field(default_factory=dict)

    @property
    def bootstrap(self) -> str:
        return self.env.get("CL_KAFKA_BOOTSTRAP", Settings().kafka_bootstrap)

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CL_INGEST_PORT']}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CL_API_PORT']}"

    def spawn(self, name: str, **env: str) -> None:
        """Start a process without waiting for it; `ready(name)` tells when it answers."""
        service = name.split("-")[0]
        if name != service:  # another scorer or dispatcher: its own HTTP port
            env.setdefault("CL_WEBHOOKS_PORT" if service == "webhooks" else "CL_SCORER_PORT", str(free_port()))
        env = {**self.env, "CL_DATABASE_URL": self.database_urls.get(service, self.env["CL_DATABASE_URL"]), **env}
        self.health[name] = {
            "ingest": f"{self.ingest_url}/readyz",  # ready: its producer reaches Kafka
            "api": f"{self.api_url}/healthz",
            "scorer": f"http://127.0.0.1:{env['CL_SCORER_PORT']}/readyz",
            "webhooks": f"http://127.0.0.1:{env['CL_WEBHOOKS_PORT']}/readyz",
        }[service]
        with open(self.logs / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", f"services.{service}"], cwd=ROOT, env=env, stdout=log, stderr=log
            )

    def ready(self, name: str) -> bool:
        assert self.procs[name].poll() is None, f"{name} exited; see {self.logs / name}.log"
        return self.answers(name)

    def answers(self, name: str) -> bool:
        """Its health check answers 200 (a process that just died, or is starting, does not)."""
        try:
            return httpx.get(self.health[name], timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self, name: str, **env: str) -> None:
        self.spawn(name, **env)
        deadline = time.monotonic() + 60
        while not self.ready(name):
            assert time.monotonic() < deadline, f"{name} not healthy in 60 s"
            time.sleep(0.2)

    async def astart(self, name: str, **env: str) -> None:
        self.spawn(name, **env)
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(self.ready, name):
            assert time.monotonic() < deadline, f"{name} not healthy in 60 s"
            await asyncio.sleep(0.2)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on TERM
            proc.send_signal(sig)
        proc.wait(timeout=60)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)


@pytest.fixture(scope="session")
def system(
    run_env: dict[str, str], database_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[System]:
    env = env_with(
        run_env,
        CL_INGEST_PORT=str(free_port()),
        CL_API_PORT=str(free_port()),
        CL_SCORER_PORT=str(free_port()),
        CL_INGEST_API_KEYS=API_KEY,
        CL_TENURE_INTERVAL="1",
        CL_WEBHOOKS_PORT=str(free_port()),
        CL_WEBHOOK_GROUP_ID=f"webhooks-{run_env['CL_GROUP_ID']}",
        # The tests' receivers listen on 127.0.0.1; one test checks the refusal without this.
        CL_WEBHOOK_ALLOW_PRIVATE="true",
        CL_WEBHOOK_TIMEOUT="2",
        CL_WEBHOOK_LEASE="5",
        CL_WEBHOOK_POLL="0.2",
    )
    logs = Path(os.environ.get("CL_E2E_LOGS", tmp_path_factory.mktemp("logs")))
    # The dispatcher runs as the scorer's role, as in `make run` and compose.
    urls = {"scorer": database_urls["scorer"], "api": database_urls["api"], "webhooks": database_urls["scorer"]}
    sut = System(env, logs, database_urls=urls)
    try:
        for name in ("scorer", "ingest", "api", "webhooks"):
            sut.start(name)
        yield sut
    finally:
        sut.stop_all()


@pytest.fixture
async def ingest(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=system.ingest_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as client:
        yield client


@pytest.fixture
async def api(system: System) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.api_url, timeout=30) as client:
        yield client


async def post_events(client: httpx.AsyncClient, events: list[dict[str, Any]], batch: int = 500) -> None:
    """Post in order, batch after batch, retrying a batch that ingest could not publish."""
    for start in range(0, len(events), batch):
        body = {"events": events[start : start + batch]}
        for _ in range(30):
            response = await client.post("/v1/events", json=body)
            if response.status_code != 503:
                break
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": len(body["events"])}
