"""The rules the API answers with: its own file's (CL_RULES_PATH) until PostgreSQL names
others in force (`cl rescore --apply`, SPEC §9.1), re-read every few seconds, so a rules
change reaches the ladder, the level names and the progress shown without a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from services.api import repository as repo
from services.api.reads import DB_ERRORS
from shared.rules import Level, Rules

log = logging.getLogger("api")
REFRESH_S = 2.0


class RulesInForce:
    def __init__(self, own: Rules) -> None:
        self.current = own
        # Levels of every rules version recorded, by id (the latest version's where several
        # have one), for members a rescore to a reshaped ladder has not reached yet.
        self.known: dict[str, Level] = {level.id: level for level in own.levels}
        self._made: dict[tuple[str, str], Any] = {}

    def once(self, name: str, make: Callable[[Rules], Any]) -> Any:
        """What `make` gives for the current rules, made once per rules version."""
        key = (self.current.version, name)
        if key not in self._made:
            self._made[key] = make(self.current)
        return self._made[key]

    async def refresh(self, engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            found = await repo.rules_in_force(conn)
            if found is None or found[0] == self.current.version:
                return
            bodies = await repo.rules_bodies(conn)
        known = {level.id: level for body in bodies for level in Rules.model_validate_json(body).levels}
        self.current, self.known = Rules.model_validate_json(found[1]), known
        log.info("rules %s in force", self.current.version)

    async def follow(self, engine: AsyncEngine) -> None:
        """Refresh for ever; while PostgreSQL is away (or a read fails), keep the rules last read."""
        while True:
            try:
                await self.refresh(engine)
            except DB_ERRORS as exc:
                log.warning("rules in force not read: %r", exc)
            except Exception:
                log.exception("rules in force not read")
            await asyncio.sleep(REFRESH_S)
