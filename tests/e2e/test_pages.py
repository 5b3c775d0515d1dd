"""What a person sees on the pages, in a real browser (Debian's chromium driven by selenium),
and a page of another origin polling a member with If-None-Match across origins (CORS).

Each run saves a screenshot of each page to docs/screenshots/.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from services.api.routes.pages import FIGURES
from services.common import db
from services.common.settings import Settings
from services.write.unit_of_work import UnitOfWork
from shared.rules import default_rules
from tests.conftest import ROOT, unique
from tests.e2e.conftest import API_KEY, System, post_events
from tests.integration.test_programs import publish_views
from tests.support import eventually, free_port

SCREENSHOTS = ROOT / "docs" / "screenshots"
WIDE, PHONE = (1000, 900), (390, 844)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--hide-scrollbars"):
        options.add_argument(arg)
    # Debian's chromedriver, so selenium fetches no driver of its own.
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_window_size(*WIDE)
    try:
        yield driver
    finally:
        driver.quit()


def ev(kind: str, member: str, days_ago: float, **fields: Any) -> dict[str, Any]:
    at = datetime.now(UTC) - timedelta(days=days_ago, minutes=1)
    return {"event_id": unique("e"), "type": kind, "member_id": member, "occurred_at": at.isoformat(), **fields}


@pytest.fixture(scope="module")
async def members(system: System) -> AsyncIterator[dict[str, str]]:
    """A contributor with 20 active points, and an explorer with 3 passive points and 3 days."""
    seeded = {"contributor": unique("ann"), "explorer": unique("bo")}
    ann, bo = seeded["contributor"], seeded["explorer"]
    events = [
        ev("visit", ann, 2, duration_s=60),
        ev("post", ann, 1, content_id=unique("p")),
        ev("reply", ann, 0.5, content_id=unique("r")),
        ev("reply", ann, 0, content_id=unique("r")),
        ev("visit", bo, 3, duration_s=600),
    ]
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        httpx.AsyncClient(base_url=system.ingest_url, headers=headers, timeout=30) as ingest,
        httpx.AsyncClient(base_url=system.api_url, timeout=30) as api,
    ):
        await post_events(ingest, events)

        async def scored() -> bool:
            body = (await api.get("/v1/members", params={"ids": f"{ann},{bo}"})).json()
            return {m["member_id"]: (m["active_score"], m["passive_score"]) for m in body["members"]} == {
                ann: (20, 2),
                bo: (0, 3),
            }

        await eventually(scored, timeout=60, what="both members scored")
    yield seeded


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")


def text(browser: WebDriver, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def texts(browser: WebDriver, css: str) -> list[str]:
    return [str(e.text) for e in browser.find_elements(By.CSS_SELECTOR, css)]


def screenshot(browser: WebDriver, name: str, size: tuple[int, int] = WIDE) -> None:
    """The whole page, at `size`'s width: the window grows to the page's height."""
    browser.set_window_size(*size)
    height = int(browser.execute_script("return document.documentElement.scrollHeight"))
    browser.set_window_size(size[0], max(size[1], height + 100))  # the window's frame takes some height
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    assert browser.save_screenshot(str(path)), f"no screenshot {path}"
    assert path.stat().st_size > 0
    browser.set_window_size(*WIDE)


def assert_accessible_frame(browser: WebDriver) -> None:
    """A language, a viewport for phones, a main landmark and one top heading."""
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    viewport = browser.find_element(By.CSS_SELECTOR, 'meta[name="viewport"]').get_attribute("content")
    assert "width=device-width" in str(viewport)
    assert len(browser.find_elements(By.CSS_SELECTOR, "main")) == 1
    assert len(browser.find_elements(By.CSS_SELECTOR, "h1")) == 1


def fits_a_phone(browser: WebDriver) -> bool:
    browser.set_window_size(*PHONE)
    width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
    browser.set_window_size(*WIDE)
    return bool(width[0] <= width[1])


async def test_the_ladder_page_says_how_each_level_is_reached_and_how_points_are_earned(
    system: System, api: httpx.AsyncClient, browser: WebDriver
) -> None:
    ladder = (await api.get("/v1/levels")).json()
    open_page(browser, f"{system.api_url}/levels")
    assert browser.title == "Levels · Community Levels"
    assert text(browser, "h1") == "Levels and how to reach them"
    assert_accessible_frame(browser)
    rows = dict(zip(texts(browser, ".rung .chip"), texts(browser, ".rung .requires"), strict=True))
    assert list(rows) == [level["name"] for level in ladder["levels"]]
    assert rows["New Member"] == "where every member starts"
    assert rows["Community Member"] == "10 passive points and 7 days as a member"
    assert rows["New Contributor"] == "1 active point"
    assert rows["Trusted Contributor"] == "500 active points"
    earned = texts(browser, "tbody td:first-child")
    assert earned == [p["how"] for p in ladder["points"] if p["tier"] == "passive"] + [
        p["how"] for p in ladder["points"] if p["tier"] == "active"
    ]
    assert "2 per comment" not in earned and "2 points per comment" in earned
    assert texts(browser, "h3") == ["Levels", "How passive points are earned", "Levels", "How active points are earned"]
    assert_levels_look_as_the_rules_say(browser, ladder)
    assert fits_a_phone(browser)
    screenshot(browser, "levels")

    open_page(browser, f"{system.api_url}/")
    assert text(browser, "h1") == "Levels and how to reach them"


def rgba(color: str) -> str:
    """ "#5b3fa8" as selenium reads the browser's computed colour: "rgba(91, 63, 168, 1)"."""
    return "rgba({}, {}, {}, 1)".format(*bytes.fromhex(color[1:]))


def contrast(ink: str, paper: str) -> float:
    """WCAG 2's contrast ratio of two computed colours ("rgba(r, g, b, 1)"), written out here apart
    from the pages' own code."""

    def luminance(css: str) -> float:
        r, g, b = (int(n) / 255 for n in css[css.index("(") + 1 : css.index(")")].split(",")[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    light, dark = sorted((luminance(ink), luminance(paper)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def assert_chip(browser: WebDriver, chip: Any, level: dict[str, Any]) -> None:
    """A level's chip: its name as text, its colour behind it, ink that reads on it (WCAG AA)."""
    assert chip.text == level["name"]
    ink, paper = chip.value_of_css_property("color"), chip.value_of_css_property("background-color")
    assert paper == rgba(level["color"]), level["id"]
    assert contrast(ink, paper) >= 4.5, (level["id"], ink, paper)


def assert_levels_look_as_the_rules_say(browser: WebDriver, ladder: dict[str, Any]) -> None:
    """Each level of /v1/levels has its rung, anchored by its id, with its look and what it adds."""
    rungs = browser.find_elements(By.CSS_SELECTOR, ".rung")
    assert [r.get_attribute("id") for r in rungs] == [level["id"] for level in ladder["levels"]]
    for rung, level in zip(rungs, ladder["levels"], strict=True):
        assert_chip(browser, rung.find_element(By.CSS_SELECTOR, ".chip"), level)
        assert rung.find_element(By.CSS_SELECTOR, ".description").text == level["description"]
        link = rung.find_element(By.CSS_SELECTOR, "a.anchor")
        assert str(link.get_attribute("href")).endswith(f"/levels#{level['id']}")
        adds = rung.find_element(By.CSS_SELECTOR, ".grants").text
        for grant in level["new_grants"]:
            assert grant.replace("_", " ") in adds, (level["id"], grant)
    trusted = next(level for level in ladder["levels"] if level["id"] == "trusted_contributor")
    assert (
        texts(browser, "#trusted_contributor .grants")[0]
        == "recategorize topics, rename topics; with those of the levels before it"
    )
    assert trusted["grants"][-2:] == ["recategorize_topics", "rename_topics"]


async def test_a_link_to_a_level_opens_the_ladder_at_that_level(system: System, browser: WebDriver) -> None:
    open_page(browser, f"{system.api_url}/levels#trusted_contributor")
    assert browser.execute_script("return document.querySelector(':target').id") == "trusted_contributor"
    top = browser.execute_script("return document.getElementById('trusted_contributor').getBoundingClientRect().top")
    assert 0 <= top < 100, "the page opens scrolled to the level"
    screenshot_view(browser, "levels-anchor")


def screenshot_view(browser: WebDriver, name: str) -> None:
    """What the window shows, as it is scrolled."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    path.unlink(missing_ok=True)
    assert browser.save_screenshot(str(path)), f"no screenshot {path}"


async def test_a_member_page_shows_the_level_a_bar_per_requirement_and_the_history(
    system: System, api: httpx.AsyncClient, browser: WebDriver, members: dict[str, str]
) -> None:
    ann = members["contributor"]
    history = (await api.get(f"/v1/members/{ann}/level-changes")).json()["level_changes"]
    assert history, "the contributor has level changes"
    open_page(browser, f"{system.api_url}/members/{ann}")
    assert_accessible_frame(browser)
    assert text(browser, "h1") == ann
    assert text(browser, ".level") == "Level: New Contributor (Contributor levels)"
    ladder = {level["id"]: level for level in (await api.get("/v1/levels")).json()["levels"]}
    read = (await api.get(f"/v1/members/{ann}")).json()
    assert read["grants"] == ladder["new_contributor"]["grants"] and "flag_posts" in read["grants"]
    assert_chip(browser, browser.find_element(By.CSS_SELECTOR, ".level .chip"), ladder["new_contributor"])
    assert text(browser, "main .description") == ladder["new_contributor"]["description"]
    assert texts(browser, "ul.grants li") == [g.replace("_", " ") for g in read["grants"]]
    reach = browser.find_element(By.LINK_TEXT, "How to reach General Contributor")
    assert str(reach.get_attribute("href")).endswith("/levels#general_contributor")
    assert text(browser, "#next") == "Next level: General Contributor"
    assert texts(browser, ".bar label") == ["20 of 25 active points"]
    bar = browser.find_element(By.CSS_SELECTOR, ".bar progress")
    assert (bar.get_attribute("value"), bar.get_attribute("max")) == ("20", "25")
    assert browser.find_element(By.CSS_SELECTOR, ".bar label").get_attribute("for") == bar.get_attribute("id")
    rows = [row.find_elements(By.TAG_NAME, "td") for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert [[cell.text for cell in row] for row in rows] == [
        [
            change["occurred_at"][:10],
            f"{change['to_level']['name']} (moved {'up' if change['direction'] == 'promoted' else 'down'})",
            change["from_level"]["name"] if change["from_level"] else "first level",
            "activity",
        ]
        for change in history
    ]
    assert rows[0][1].text == "New Contributor (moved up)"
    assert fits_a_phone(browser)
    screenshot(browser, "member")
    screenshot(browser, "member-phone", PHONE)


async def test_an_explorer_sees_points_and_days_toward_the_next_level(
    system: System, browser: WebDriver, members: dict[str, str]
) -> None:
    open_page(browser, f"{system.api_url}/members/{members['explorer']}")
    assert text(browser, ".level") == "Level: New Member (Explorer levels)"
    assert text(browser, "p.grants") == "No privileges beyond those every member has."
    assert text(browser, "#next") == "Next level: Community Member"
    assert texts(browser, ".bar label") == ["3 of 10 passive points", "3 of 7 days as a member"]
    values = [
        (b.get_attribute("value"), b.get_attribute("max")) for b in browser.find_elements(By.TAG_NAME, "progress")
    ]
    assert values == [("3", "10"), ("3", "7")]


async def test_the_leaderboard_page_shows_the_board_the_api_serves(
    system: System, api: httpx.AsyncClient, browser: WebDriver, members: dict[str, str]
) -> None:
    ann = members["contributor"]
    ladder = {level["id"]: level for level in (await api.get("/v1/levels")).json()["levels"]}
    for tier, period in (("active", "week"), ("passive", "all")):
        board = (await api.get("/v1/leaderboard", params={"tier": tier, "period": period, "limit": 50})).json()
        open_page(browser, f"{system.api_url}/leaderboard?tier={tier}&period={period}")
        assert_accessible_frame(browser)
        over = {"week": "this week", "all": "of all time"}[period]
        assert text(browser, "h1") == f"Most {tier} points {over}"
        rows = [row.split("\n") if "\n" in row else row.split(" ") for row in texts(browser, "tbody tr")]
        shown = [(int(cells[0]), cells[1], " ".join(cells[2:-1]), int(cells[-1].replace(",", ""))) for cells in rows]
        assert shown == [(e["rank"], e["member_id"], e["level"]["name"], e["score"]) for e in board["entries"]]
        chips = browser.find_elements(By.CSS_SELECTOR, "tbody tr .chip")
        assert len(chips) == len(board["entries"])
        for chip, entry in zip(chips, board["entries"], strict=True):
            assert_chip(browser, chip, ladder[entry["level"]["id"]])
        assert board["entries"], "members with points are listed"
        assert text(browser, "caption").startswith(f"{board['total']} member")
        assert fits_a_phone(browser)
    open_page(browser, f"{system.api_url}/leaderboard?tier=active&period=all")
    place = (await api.get(f"/v1/members/{ann}/rank", params={"period": "all"})).json()
    assert place["rank"] is not None and place["score"] == 20
    if place["rank"] <= 50:
        link = browser.find_element(By.LINK_TEXT, ann)
        assert str(link.get_attribute("href")).endswith(f"/members/{ann}")
    assert browser.find_element(By.CSS_SELECTOR, "[aria-current=page]").text == "active"
    screenshot(browser, "leaderboard")


async def test_last_years_top_25_is_a_link_away_from_the_leaderboards(
    system: System, api: httpx.AsyncClient, browser: WebDriver
) -> None:
    last = datetime.now(UTC).year - 1
    top = [unique(f"boss{i}") for i in range(3)]
    at = datetime(last, 12, 31, 12, tzinfo=UTC).isoformat()
    events = [
        {"event_id": unique("e"), "type": "article", "member_id": m, "occurred_at": at, "content_id": unique("a")}
        for m in top
    ]
    events.append({**events[0], "event_id": unique("e"), "type": "post", "content_id": unique("p")})
    async with httpx.AsyncClient(
        base_url=system.ingest_url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ) as ingest:
        await post_events(ingest, events)
    asked: dict[str, str | int] = {"tier": "active", "period": f"year:{last}", "exclude": "pinned", "limit": 25}

    async def listed() -> bool:
        board = (await api.get("/v1/leaderboard", params=asked)).json()
        return set(top) <= {e["member_id"] for e in board["entries"]}

    await eventually(listed, timeout=60, what="last year's members on its board")
    board = (await api.get("/v1/leaderboard", params=asked)).json()
    open_page(browser, f"{system.api_url}/leaderboard")
    browser.find_element(By.LINK_TEXT, "Last year's top 25").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert_accessible_frame(browser)
    assert text(browser, "h1") == f"Top 25 active points in {last}"
    rows = [row.split("\n") if "\n" in row else row.split(" ") for row in texts(browser, "tbody tr")]
    shown = [(int(cells[0]), cells[1], int(cells[-1].replace(",", ""))) for cells in rows]
    assert shown == [(e["rank"], e["member_id"], e["score"]) for e in board["entries"]]
    assert shown[0] == (1, top[0], 35)
    assert board["total"] == len(board["entries"]) >= 3  # the board was read empty before: no stale size
    assert text(browser, "caption") == f"{board['total']} members with active points in {last}, pinned members left out"
    assert fits_a_phone(browser)
    screenshot(browser, "leaderboard-last-year")

    open_page(browser, f"{system.api_url}/leaderboard?period=year:{last - 40}")
    assert text(browser, "h1") == "Period no longer kept"
    open_page(browser, f"{system.api_url}/leaderboard?period=week:{last}-W60")
    assert text(browser, "h1") == "No such period"


async def test_a_level_page_lists_who_holds_it_and_who_is_closest_to_it(
    system: System, api: httpx.AsyncClient, browser: WebDriver, members: dict[str, str]
) -> None:
    ann = members["contributor"]
    open_page(browser, f"{system.api_url}/levels")
    browser.find_element(By.LINK_TEXT, "General Contributor").click()
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert_accessible_frame(browser)
    assert text(browser, "h1") == "General Contributor"
    holders = (await api.get("/v1/levels/general_contributor/members", params={"limit": 50})).json()
    near = (await api.get("/v1/levels/general_contributor/within-reach", params={"limit": 50})).json()
    sections = browser.find_elements(By.CSS_SELECTOR, "section")
    held = [r.text for r in sections[0].find_elements(By.CSS_SELECTOR, "tbody th")]
    assert held == [m["member_id"] for m in holders["members"]]
    rows = {
        r.find_element(By.TAG_NAME, "th").text: r.find_element(By.TAG_NAME, "td").text
        for r in sections[1].find_elements(By.CSS_SELECTOR, "tbody tr")
    }
    assert list(rows) == [m["member_id"] for m in near["members"]]
    for m in near["members"]:  # the suite's other members share the ladder: check each row shown
        needs = [f"{n['remaining']:,} {FIGURES[n['requirement']][n['remaining'] != 1]}" for n in m["needs"]]
        assert rows[m["member_id"]] == (" and ".join(needs) or "nothing more")
    offset, ann_needs = 0, None
    while ann_needs is None:  # ann is somewhere in the whole list, however many others are closer
        page = (
            await api.get("/v1/levels/general_contributor/within-reach", params={"limit": 100, "offset": offset})
        ).json()
        assert page["members"], f"{ann} is not within reach of General Contributor"
        ann_needs = next((m["needs"] for m in page["members"] if m["member_id"] == ann), None)
        offset += 100
    assert [(n["requirement"], n["remaining"]) for n in ann_needs] == [("active_score", 5)]  # 20 of the 25 it requires
    assert fits_a_phone(browser)
    screenshot(browser, "level")
    missing = await api.get("/levels/grand_wizard")
    assert missing.status_code == 404 and "grand_wizard" in missing.text


async def test_the_programmes_page_lists_each_programme_and_a_member_page_shows_its_programmes(
    system: System, api: httpx.AsyncClient, browser: WebDriver
) -> None:
    boss = unique("boss")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=system.ingest_url, headers=headers, timeout=30) as ingest:
        await post_events(ingest, [ev("article", boss, 1, content_id=unique("a")) for _ in range(40)])

    async def is_boss() -> bool:
        answer = await api.get(f"/v1/members/{boss}")
        return answer.status_code == 200 and answer.json()["level"]["id"] == "community_boss"

    await eventually(is_boss, timeout=60, what="a Community Boss")
    # Enrolled as `cl program enroll` does, at the next intake, when its window is open.
    programs = (await api.get("/v1/programs")).json()["programs"]
    intake = datetime.fromisoformat(programs[0]["next_intake"]).replace(tzinfo=UTC)
    engine = db.engine(system.env["CL_DATABASE_URL"], "test")
    redis = Redis.from_url(system.env.get("CL_REDIS_URL", Settings().redis_url))
    try:
        done = await UnitOfWork(engine, default_rules(), "test", "test").enroll(
            boss, "community_boss", "mod", None, intake + timedelta(hours=1)
        )
        assert done is not None
        await publish_views(engine, redis, system.env["CL_REDIS_PREFIX"], done)
    finally:
        await redis.aclose()
        await engine.dispose()

    open_page(browser, f"{system.api_url}/programs")
    assert_accessible_frame(browser)
    assert browser.title == "Programmes · Community Levels"
    rows = [
        [str(c.text) for c in row.find_elements(By.CSS_SELECTOR, "th, td")]
        for row in browser.find_elements(By.CSS_SELECTOR, "tbody tr")
    ]
    (boss_program,) = (await api.get("/v1/programs")).json()["programs"]
    assert rows == [
        [
            "Community Boss program",
            "Community Boss and above",
            "every 02-01 and 07-01 (MM-DD), open 14 days",
            boss_program["next_intake"],
            f"{boss_program['enrolled']:,}",
        ]
    ]
    assert boss_program["enrolled"] >= 1
    assert fits_a_phone(browser)
    screenshot(browser, "programs")

    open_page(browser, f"{system.api_url}/members/{boss}")
    assert text(browser, ".programs") == "In Community Boss program (programmes)."
    browser.find_element(By.LINK_TEXT, "Programmes")  # in the site's navigation
    screenshot(browser, "member-programs")


async def test_the_badges_page_lists_the_catalogue_and_a_member_page_shows_the_badges_held(
    system: System, api: httpx.AsyncClient, browser: WebDriver, members: dict[str, str]
) -> None:
    """SPEC §10.2: the badges page is the catalogue of /v1/badges, each badge anchored by its id;
    a member page lists the badges held, each linking to its row, or says how to earn one."""
    ann, bo = members["contributor"], members["explorer"]
    open_page(browser, f"{system.api_url}/badges")
    catalogue = (await api.get("/v1/badges")).json()["badges"]
    assert_accessible_frame(browser)
    assert browser.title == "Badges · Community Levels" and text(browser, "h1") == "Badges"
    browser.find_element(By.CSS_SELECTOR, 'nav a[href="/badges"]')  # in the site's navigation
    rows = browser.find_elements(By.CSS_SELECTOR, "table.badges tbody tr")
    assert [row.get_attribute("id") for row in rows] == [b["id"] for b in catalogue]
    shown = [[str(c.text) for c in row.find_elements(By.CSS_SELECTOR, "th, td")] for row in rows]
    assert shown == [
        [
            b["name"],
            b["description"] + (" Learn more" if b["link"] else ""),
            b["how"],
            f"{b['holders']:,}",
        ]
        for b in catalogue
    ]
    academy = next(b for b in catalogue if b["manual"])
    link = browser.find_element(By.CSS_SELECTOR, f"tr#{academy['id']} a")
    assert link.get_attribute("href") == academy["link"] and link.text == "Learn more"
    by_id = {b["id"]: b for b in catalogue}
    assert by_id["first_reply"]["holders"] >= 1 and by_id["first_post"]["how"] == "A first post started."
    assert fits_a_phone(browser)
    screenshot(browser, "badges")

    # ann's post and replies earned First Post and First Reply; bo, who only visited, has none.
    held = (await api.get(f"/v1/members/{ann}")).json()["badges"]
    assert {b["id"] for b in held} == {"first_post", "first_reply"}
    open_page(browser, f"{system.api_url}/members/{ann}")
    assert texts(browser, "ul.badges li") == [f"{b['name']} since {b['granted_at'][:10]}" for b in held]
    links = browser.find_elements(By.CSS_SELECTOR, "ul.badges li a")
    assert [str(a.get_attribute("href")) for a in links] == [f"{system.api_url}/badges#{b['id']}" for b in held]
    times = browser.find_elements(By.CSS_SELECTOR, "ul.badges time")
    assert [t.get_attribute("datetime") for t in times] == [b["granted_at"] for b in held]
    links[0].click()  # the badge's row on the badges page
    WebDriverWait(browser, 10).until(lambda d: d.current_url.endswith(f"/badges#{held[0]['id']}"))
    assert browser.find_element(By.ID, held[0]["id"]).find_element(By.TAG_NAME, "th").text == held[0]["name"]

    assert (await api.get(f"/v1/members/{bo}")).json()["badges"] == []
    open_page(browser, f"{system.api_url}/members/{bo}")
    assert text(browser, "p.badges") == "No badges yet: see how to earn them."
    assert str(browser.find_element(By.LINK_TEXT, "see how to earn them").get_attribute("href")).endswith("/badges")


async def test_an_unknown_member_gets_a_clear_not_found_page(
    system: System, api: httpx.AsyncClient, browser: WebDriver
) -> None:
    nobody = unique("nobody")
    response = await api.get(f"/members/{nobody}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    open_page(browser, f"{system.api_url}/members/{nobody}")
    assert_accessible_frame(browser)
    assert text(browser, "h1") == "Member not found"
    assert nobody in text(browser, "main p")
    assert browser.find_element(By.CSS_SELECTOR, "main a").get_attribute("href") == f"{system.api_url}/levels"
    screenshot(browser, "member-not-found")


# A frontend on another origin: reads the member, then asks again with the ETag it was given.
POLL_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>poll</title></head>
<body><pre id="result"></pre>
<script>
const member = new URLSearchParams(location.search).get("member");
const show = (result) => { document.getElementById("result").textContent = JSON.stringify(result); };
(async () => {
  const first = await fetch(member);
  const etag = first.headers.get("ETag");
  const body = await first.json();
  const second = await fetch(member, {headers: {"If-None-Match": etag}});
  show({first: first.status, etag, member: body.member_id, second: second.status});
})().catch((error) => show({error: String(error)}));
</script></body></html>
"""


@pytest.fixture(scope="module")
def other_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tiny web server on another port: another origin than the API's."""
    root = tmp_path_factory.mktemp("origin")
    (root / "poll.html").write_text(POLL_PAGE)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def cors_api(system: System, other_origin: str) -> Iterator[str]:
    """Another API process, whose configured origins include the other origin's."""
    url = f"http://127.0.0.1:{free_port()}"
    system.spawn(
        "api-cors", CL_API_PORT=url.rsplit(":", 1)[1], CL_API_CORS_ORIGINS=f"https://forum.example.org,{other_origin}"
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert system.procs["api-cors"].poll() is None, f"api-cors exited; see {system.logs / 'api-cors.log'}"
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "api-cors not healthy in 60 s"
            time.sleep(0.2)
        yield url
    finally:
        system.kill("api-cors", signal.SIGTERM)


def poll_from(browser: WebDriver, page: str, member_url: str) -> dict[str, Any]:
    open_page(browser, f"{page}?{httpx.QueryParams(member=member_url)}")
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "result").text)
    result: dict[str, Any] = json.loads(text(browser, "#result"))
    return result


async def test_a_page_of_a_configured_origin_polls_a_member_with_its_etag(
    browser: WebDriver, members: dict[str, str], other_origin: str, cors_api: str
) -> None:
    ann = members["contributor"]
    result = poll_from(browser, f"{other_origin}/poll.html", f"{cors_api}/v1/members/{ann}")
    assert result == {"first": 200, "etag": result["etag"], "member": ann, "second": 304}
    assert result["etag"] and result["etag"].startswith('"'), "the ETag is readable across origins"


async def test_a_page_of_an_origin_not_configured_cannot_read_a_member(
    system: System, browser: WebDriver, members: dict[str, str], other_origin: str
) -> None:
    # The test system's API has no configured origins.
    result = poll_from(browser, f"{other_origin}/poll.html", f"{system.api_url}/v1/members/{members['contributor']}")
    assert set(result) == {"error"}
    assert "Failed to fetch" in result["error"]
