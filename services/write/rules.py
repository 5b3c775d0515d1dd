"""The rules of each version members are scored under (SPEC §9.1).

PostgreSQL keeps every rules file the system has run under (`rules`) and names the one in
force (`rules_in_force`): what new members, and members brought up to date, are scored under.
A service's own file (CL_RULES_PATH) seeds them on a database that has none; after that,
`cl rescore --apply` is what changes the rules in force, and the scorer follows without a
restart.
"""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from services.scorer import repository as repo
from shared.rules import Rules, RulesError


def body_of(rules: Rules) -> str:
    """A rules file as kept in PostgreSQL."""
    return orjson.dumps(rules.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS).decode()


async def record(conn: AsyncConnection, rules: Rules) -> None:
    """Keep these rules under their version; a version already kept with other rules is refused."""
    if await repo.record_rules(conn, rules.version, body_of(rules)) != body_of(rules):
        raise RulesError(
            f"rules version {rules.version!r} is already recorded with other rules: give the new rules a new version"
        )


class RulesBook:
    """Rules by version, each read from PostgreSQL once; `own` are the service's own (its file)."""

    def __init__(self, own: Rules) -> None:
        self.own = own
        self.versions = {own.version: own}

    async def in_force(self, conn: AsyncConnection) -> Rules:
        """The rules in force, held for the transaction (seeded with `own` if none are)."""
        version = await repo.rules_in_force(conn)
        if version is None:
            await record(conn, self.own)
            await repo.seed_rules(conn, self.own.version)
            version = await repo.rules_in_force(conn)
            assert version is not None
        return await self.get(conn, version)

    async def get(self, conn: AsyncConnection, version: str | None) -> Rules:
        """The rules of a version (None: members from before versions were kept, under `own`)."""
        if version is None:
            return self.own
        if version not in self.versions:
            body = await repo.rules_body(conn, version)
            if body is None:
                raise RulesError(f"rules version {version!r} is not recorded")
            self.versions[version] = Rules.model_validate_json(body)
        return self.versions[version]
