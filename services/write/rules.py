"""The rules of each version members are scored under (SPEC §9.1).

PostgreSQL keeps every rules file the system has run under (`rules`) and names the one in
force (`rules_in_force`): what new members, and members brought up to date, are scored under.
A service's own file (CL_RULES_PATH) seeds them on a database that has none; after that,
`cl rescore --apply` is what changes the rules in force, and the scorer follows without a
restart.
"""

from __future__ import annotations

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.write.sql import members
from services.write.sql import rules as repo
from shared.rules import Rules, RulesError


def body_of(rules: Rules) -> str:
    """A rules file as kept in PostgreSQL (rules with no programmes as they were kept before
    programmes existed, so a version recorded then still matches)."""
    kept = rules.model_dump(mode="json", exclude=None if rules.programs else {"programs"})
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS).decode()


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


async def in_force(engine: AsyncEngine, own: Rules) -> Rules:
    """The rules in force, as `cl` shows them (`own` while PostgreSQL names none yet); writes nothing."""
    async with engine.begin() as conn:
        version = await repo.rules_in_force(conn)
        return await RulesBook(own).get(conn, version) if version else own


class PinsOutside(RulesError):
    """Members are pinned at levels the new rules lack."""

    def __init__(self, pins: list[tuple[str, str]]) -> None:
        super().__init__(f"{len(pins)} members are pinned at levels these rules lack")
        self.pins = pins  # (member, level), in member id order


async def put_in_force(engine: AsyncEngine, book: RulesBook, rules: Rules) -> None:
    """Keep `rules` and put them in force, once no transaction scores under the old ones.
    Refused, with nothing kept, while a member is pinned at a level they lack (`PinsOutside`):
    a pin names a level of the rules in force."""
    async with engine.begin() as conn:
        await book.in_force(conn)  # seeded from the service's own file on a database that has none
        await record(conn, rules)
        await repo.put_rules_in_force(conn, rules.version)  # waits for transactions under the old rules
        pins = await members.pins_outside(conn, [level.id for level in rules.levels])
        if pins:
            raise PinsOutside(pins)
