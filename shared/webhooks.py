"""Which events a webhook endpoint takes (SPEC §12): the names `cl webhook add --events` and
`--exclude-cause` take, and whether an event of the member-keyed topic goes to an endpoint.

Events are known by their CloudEvents type (`ce_type`), so a type added later (say a new
badge event) flows to endpoints that take every event (`all`) with no change here.
"""

from __future__ import annotations

# The short names of the events on level-changes, and their CloudEvents types.
EVENTS: dict[str, str] = {
    "promoted": "community.level.promoted",
    "demoted": "community.level.demoted",
    "badge.granted": "community.badge.granted",
    "badge.revoked": "community.badge.revoked",
    "program.joined": "community.program.joined",
    "program.left": "community.program.left",
    # An erased member's tombstone: the endpoint forgets the member (SPEC §9.4).
    "member.erased": "community.member.erased",
}
ERASED = EVENTS["member.erased"]
EVERY = "*"  # every event type, those added later too
CAUSES = ("activity", "tenure", "rescore", "override")


def event_types(text: str) -> list[str]:
    """The CloudEvents types that `--events` names (comma-separated short names, full types, or
    `all`); ValueError names what is not an event."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise ValueError(f"--events names no event; give some of {', '.join(EVENTS)}, or all")
    types = []
    for name in names:
        if name == "all":
            return [EVERY]
        if name in EVENTS:
            types.append(EVENTS[name])
        elif name in EVENTS.values():
            types.append(name)
        else:
            raise ValueError(f"--events: no event {name!r}; the events are {', '.join(EVENTS)}, or all")
    return list(dict.fromkeys(types))


def causes(text: str) -> list[str]:
    """The causes that `--exclude-cause` names; ValueError names one that is not a cause."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if unknown := [name for name in names if name not in CAUSES]:
        raise ValueError(f"--exclude-cause: no cause {unknown[0]!r}; the causes are {', '.join(CAUSES)}")
    return names


def short_name(event_type: str) -> str:
    """How `cl webhook list` shows a type."""
    if event_type == EVERY:
        return "all"
    return next((name for name, full in EVENTS.items() if full == event_type), event_type)


def wanted(events: list[str], exclude_causes: list[str], event_type: str, cause: str | None) -> bool:
    """Whether an endpoint taking `events`, less `exclude_causes`, gets an event of this type
    and cause (the `cause.kind` of a level change; None for an event without one)."""
    if EVERY not in events and event_type not in events:
        return False
    return cause is None or cause not in exclude_causes
