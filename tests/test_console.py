"""The operator console in a real browser: Debian's Chromium driven by Playwright against a
real ``airside serve`` on a loopback port (tests/server_harness.py).

Sign-in and sign-out with the cookie's flags; a role sees only its pages and the API refuses
it anyway; CSRF; a gallery created and a traveller enrolled from the desk; a watchlist hit
raised by a camera worker, seen live in the feed, made actionable only by two different
reviewers; an erasure with its receipt; the governance report and the audit check.

``AIRSIDE_CONSOLE_SCREENSHOTS=docs/img`` saves a screenshot of each page there (docs/console.md).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from tests.conftest import png_bytes
from tests.server_harness import Server, running

from airside.governance.consent import BasisInput
from airside.services import enrolment, galleries, subjects
from airside.services.app import Airside
from airside.synthetic.clips import Sprite, make_video

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = os.environ.get("AIRSIDE_CONSOLE_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() or shutil.which("chromium") is None,
    reason="Debian's chromium is not installed (apt-get install chromium); Playwright's own "
    "browser download does not work here",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                # a test-pattern camera, allowed without a prompt (getUserMedia)
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def server(app: Airside) -> Iterator[Server]:
    with running(app) as s:
        yield s
        while OPEN:  # the pages' event streams end before the server stops
            OPEN.pop().close()


def shot(page: Any, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)


OPEN: list[Any] = []  # browser contexts to close before their server stops (SSE streams)


@pytest.fixture(autouse=True)
def close_contexts() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


def sign_in(browser: Any, server: Server, key: str) -> Any:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    OPEN.append(context)
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#signout").wait_for()
    return page


def enrolled(server: Server, gallery: str, subject: str, face: np.ndarray) -> None:
    """A boarding gallery with ``subject`` enrolled from ``face`` on consent."""
    galleries.create_gallery(server.airside, server.admin, gallery, "boarding:" + gallery[6:])
    enrolment.enrol(server.airside, server.admin, gallery, subject, [png_bytes(face)],
                    BasisInput("consent", f"form-{subject}"))  # fmt: skip


def expect_text(locator: Any, text: str, timeout: float = 15) -> None:
    from playwright.sync_api import expect

    expect(locator).to_contain_text(text, timeout=timeout * 1000)


# ------------------------------------------------------------------- signing in and out


def test_sign_in_sets_a_strict_httponly_cookie_and_sign_out_ends_the_session(
    browser: Any, server: Server
) -> None:
    page = sign_in(browser, server, server.admin_key)
    shot(page, "wall")
    (cookie,) = page.context.cookies()
    assert cookie["name"] == "airside_session" and cookie["httpOnly"]
    assert cookie["sameSite"] == "Strict" and cookie["expires"] > time.time() + 3600
    assert server.admin_key not in page.content()  # the key is not kept in the page
    assert page.evaluate("document.cookie") == ""  # page scripts cannot read the session
    nav = page.locator("#nav").inner_text()
    for title in (
        "Live wall",
        "Review queue",
        "Enrolment desk",
        "Subjects and rights",
        "Governance",
    ):
        assert title in nav
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("API key").wait_for()
    with httpx.Client(base_url=server.url, cookies={"airside_session": cookie["value"]}) as c:
        gone = c.get("/api/v1/session")
    assert gone.status_code == 401 and gone.json()["code"] == "session_ended"


def test_a_wrong_key_is_refused_with_a_message_and_no_cookie(browser: Any, server: Server) -> None:
    context = browser.new_context()
    OPEN.append(context)
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("API key").fill("as1_000000000000_" + "x" * 43)
    page.get_by_role("button", name="Sign in").click()
    expect_text(page.locator("#signin-error"), "Not signed in")
    assert context.cookies() == []


def test_an_operator_sees_no_admin_pages_and_the_api_refuses_it_anyway(
    browser: Any, server: Server
) -> None:
    page = sign_in(browser, server, server.key_for("gate-7", "operator"))
    nav = page.locator("#nav").inner_text()
    assert "Check a face" in nav and "Live wall" in nav
    assert "Subjects and rights" not in nav and "Governance" not in nav
    status = page.evaluate(
        """async () => (await fetch('/api/v1/subjects/PNR-1', {method: 'DELETE',
             headers: {'X-CSRF-Token': sessionStorage.getItem('airside.csrf')}})).status"""
    )
    assert status == 403
    report = page.evaluate("async () => (await fetch('/api/v1/reports/governance')).status")
    assert report == 403


def test_a_change_without_the_csrf_token_is_refused_even_with_the_cookie(
    browser: Any, server: Server
) -> None:
    page = sign_in(browser, server, server.admin_key)
    forged = page.evaluate(
        """async () => { const r = await fetch('/api/v1/galleries', {method: 'POST',
             headers: {'Content-Type': 'application/json'},
             body: JSON.stringify({name: 'evil', purpose: 'boarding:X'})});
             return [r.status, (await r.json()).code]; }"""
    )
    assert forged == [403, "csrf_failed"]
    assert "evil" not in [g.name for g in galleries.list_galleries(server.airside, server.admin)]


# ---------------------------------------------------------------------- the desk


def test_a_gallery_is_created_and_a_traveller_enrolled_from_the_desk(
    browser: Any, server: Server, astronaut: np.ndarray, tmp_path: Path
) -> None:
    photo = tmp_path / "traveller.png"
    photo.write_bytes(png_bytes(astronaut))
    page = sign_in(browser, server, server.admin_key)
    page.goto(server.url + "/#enrol")
    page.get_by_label("Name", exact=True).fill("board-KE1")
    page.get_by_label("Purpose (e.g. boarding:KE123)").fill("boarding:KE1")
    page.get_by_role("button", name="Create gallery").click()
    expect_text(page.locator("#gallery-result"), "Gallery board-KE1 created")
    page.get_by_label("Gallery", exact=True).fill("board-KE1")
    page.get_by_label("Subject reference (booking or document number)").fill("PNR-7")
    page.get_by_label("Basis reference (consent form id, legal instrument)").fill("form-19")
    page.get_by_label("Photo", exact=True).set_input_files(str(photo))
    page.get_by_role("button", name="Check the photo").click()  # before anything is saved
    expect_text(page.locator("#quality-result"), "it can be enrolled", timeout=90)
    assert subjects.list_subjects(server.airside, server.admin, "board-KE1") == []
    page.get_by_role("button", name="Enrol", exact=True).click()
    expect_text(page.locator("#enrol-result"), "Enrolled PNR-7: 1 template(s) kept", timeout=90)
    shot(page, "enrol")
    found = subjects.list_subjects(server.airside, server.admin, "board-KE1")
    assert [s.subject for s in found] == ["PNR-7"]


# ----------------------------------------------------- a watchlist hit, two reviewers


def test_a_watchlist_hit_from_a_camera_is_seen_live_and_needs_two_reviewers(
    browser: Any, app: Airside, astronaut: np.ndarray, tmp_path: Path
) -> None:
    from airside.services.principal_admin import ensure_local_admin

    admin = ensure_local_admin(app)
    galleries.create_gallery(app, admin, "wl", "watchlist:security")
    enrolment.enrol(
        app,
        admin,
        "wl",
        "WANTED-1",
        [png_bytes(astronaut)],
        BasisInput("legal_obligation", "order-5"),
    )
    make_video(tmp_path / "clip.mp4", frames=20, size=(320, 240), fps=10,
               sprites=[Sprite("a", "astronaut", (110, 130), [(160, 120)])])  # fmt: skip
    cameras = tmp_path / "cameras.toml"
    cameras.write_text(
        '[[camera]]\nname = "hall-3"\nsource = "clip.mp4"\ngalleries = ["wl"]\nloop = true\n'
    )
    with running(app, cameras_file=cameras) as server:
        wall = sign_in(browser, server, server.key_for("duty-2", "operator"))
        expect_text(wall.locator("#feed"), "watchlist_hit", timeout=90)
        expect_text(wall.locator("#cameras"), "running")  # the camera table follows its state
        shot(wall, "wall-hit")
        first = sign_in(browser, server, server.key_for("rev-a", "reviewer"))
        first.goto(server.url + "/#review")
        card = first.locator("article[data-case]").first
        card.wait_for()
        shot(first, "review")
        card.get_by_role("button", name="Confirm").click()
        expect_text(card, "a second, different reviewer must confirm")
        card.get_by_role("button", name="Confirm").click()  # the same reviewer again
        expect_text(card, "reviewer")
        assert "actionable" not in card.locator("p[role=status]").inner_text().lower()
        second = sign_in(browser, server, server.key_for("rev-b", "reviewer"))
        second.goto(server.url + "/#review")
        card2 = second.locator("article[data-case]").first
        card2.get_by_role("button", name="Confirm").click()
        expect_text(card2, "Confirmed by two reviewers: actionable.")
        while OPEN:
            OPEN.pop().close()


# -------------------------------------------------------------- rights and governance


def test_an_erasure_from_the_console_gives_a_downloadable_receipt(
    browser: Any, server: Server, astronaut: np.ndarray
) -> None:
    enrolled(server, "board-KE2", "PNR-9", astronaut)
    page = sign_in(browser, server, server.admin_key)
    page.goto(server.url + "/#subjects")
    page.locator("#s-ref").fill("PNR-9")
    page.get_by_role("button", name="Erase everywhere").click()
    with page.expect_download() as download:
        page.locator("#receipt-link").click()
    receipt = json.loads(Path(download.value.path()).read_text())
    assert receipt["kind"] == "subject.erase" and receipt["subject"] == "PNR-9"
    assert len(receipt["signature"]) > 40  # signed by the installation (docs/erasure.md)
    shot(page, "subjects")
    assert subjects.list_subjects(server.airside, server.admin, "board-KE2") == []


def test_the_governance_page_renders_the_report_and_verifies_the_chain(
    browser: Any, server: Server
) -> None:
    page = sign_in(browser, server, server.key_for("dpo", "auditor"))
    page.goto(server.url + "/#governance")
    frame = page.frame_locator("iframe[title='Governance report']")
    expect_text(frame.locator("body"), "overnance")
    page.get_by_role("button", name="Verify the audit chain").click()
    expect_text(page.locator("#audit-result"), "The chain verifies")
    shot(page, "governance")


def test_batch_enrolment_from_a_manifest_reports_each_row_with_progress(
    browser: Any, server: Server, astronaut: np.ndarray, tmp_path: Path
) -> None:
    galleries.create_gallery(server.airside, server.admin, "board-KE4", "boarding:KE4")
    (tmp_path / "a.png").write_bytes(png_bytes(astronaut))
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("subject,photo,basis,basis_ref\nPNR-41,a.png,consent,form-41\n"
                        "PNR-42,missing.png,consent,form-42\n")  # fmt: skip
    page = sign_in(browser, server, server.admin_key)
    page.goto(server.url + "/#enrol")
    page.get_by_label("Gallery for the batch").fill("board-KE4")
    page.get_by_label("Manifest (CSV: subject,photo,basis,basis_ref)").set_input_files(
        str(manifest)
    )
    page.get_by_label("The photos it names").set_input_files([str(tmp_path / "a.png")])
    page.get_by_role("button", name="Enrol the batch").click()
    expect_text(page.locator("#b-rows"), "photo missing.png not chosen", timeout=90)
    assert "enrolled (1 template)" in page.locator("#b-rows").inner_text()
    assert page.locator("#b-progress").evaluate("p => [p.value, p.max]") == [2, 2]
    found = subjects.list_subjects(server.airside, server.admin, "board-KE4")
    assert [s.subject for s in found] == ["PNR-41"]


def test_a_photo_from_the_device_camera_goes_to_the_api_only_on_enrol(
    browser: Any, server: Server
) -> None:
    galleries.create_gallery(server.airside, server.admin, "board-KE5", "boarding:KE5")
    page = sign_in(browser, server, server.admin_key)
    page.goto(server.url + "/#enrol")
    page.get_by_role("button", name="Use the camera").click()
    page.get_by_label("Gallery", exact=True).fill("board-KE5")
    page.get_by_role("button", name="Take photo").click()
    expect_text(page.locator("#e-camera-status"), "Photo taken")
    # the verdict comes before saving: a test pattern has no face
    expect_text(page.locator("#quality-result"), "It would be refused", timeout=90)
    page.get_by_label("Subject reference (booking or document number)").fill("PNR-51")
    page.get_by_role("button", name="Enrol", exact=True).click()
    # Chromium's fake camera shows a test pattern, not a face: the API's refusal is shown.
    expect_text(page.locator("#enrol-result"), "Not enrolled:", timeout=90)  # models may load
    assert "face" in page.locator("#enrol-result").inner_text().lower()


def test_an_operator_identifies_a_traveller_against_a_gallery(
    browser: Any, server: Server, astronaut: np.ndarray, tmp_path: Path
) -> None:
    enrolled(server, "board-KE3", "PNR-3", astronaut)
    (tmp_path / "probe.png").write_bytes(png_bytes(astronaut))
    page = sign_in(browser, server, server.key_for("gate-3", "operator", [("board-*", "*")]))
    page.goto(server.url + "/#check")
    page.get_by_label("Gallery to search").fill("board-KE3")
    page.locator("#i-image").set_input_files(str(tmp_path / "probe.png"))
    page.get_by_role("button", name="Identify").click()
    expect_text(page.locator("#identify-result"), "Match: PNR-3", timeout=90)
    shot(page, "check")


def test_a_subject_is_found_with_the_galleries_and_bases_that_hold_them(
    browser: Any, server: Server, astronaut: np.ndarray
) -> None:
    enrolled(server, "board-KE6", "PNR-6", astronaut)
    page = sign_in(browser, server, server.admin_key)
    page.goto(server.url + "/#subjects")
    page.get_by_label("Subject reference to find").fill("PNR-6")
    page.get_by_role("button", name="Find").click()
    expect_text(page.locator("#find-result"), "PNR-6 is enrolled in: board-KE6 (1 template)")
    assert "boarding:KE6" in page.locator("#find-result").inner_text()


def test_governance_shows_retention_and_who_may_search_which_gallery(
    browser: Any, server: Server
) -> None:
    galleries.create_gallery(server.airside, server.admin, "board-KE8", "boarding:KE8")
    server.key_for("gate-8", "operator", [("board-KE8", "boarding:*")])
    page = sign_in(browser, server, server.admin_key)
    page.goto(server.url + "/#governance")
    expect_text(page.locator("#retention"), "boarding:KE8")
    expect_text(page.locator("#access"), "board-KE8 (boarding:*)")


def test_an_admin_adds_a_camera_and_draws_its_zones_and_lines_on_a_snapshot(
    browser: Any, app: Airside, tmp_path: Path
) -> None:
    import tomllib

    from airside.analytics.scene import load_scene

    make_video(tmp_path / "hall.mp4", frames=30, size=(320, 240), fps=10,
               sprites=[Sprite("a", "astronaut", (110, 130), [(160, 120)])])  # fmt: skip
    scene = tmp_path / "hall.toml"
    scene.write_text(  # a rule already there must survive the drawing
        'camera = "hall-9"\n[zones.hall]\npoints = [[0, 0], [1, 0], [1, 1], [0, 1]]\n'
        '[[rules]]\ntype = "crowding"\nzone = "hall"\nmax_count = 5\n'
    )
    cameras = tmp_path / "cameras.toml"
    cameras.write_text("# cameras added from the console\n")
    with running(app, cameras_file=cameras) as server:
        page = sign_in(browser, server, server.admin_key)
        page.goto(server.url + "/#cameras")
        page.get_by_label("Camera name").fill("hall-9")
        page.get_by_label("Source (rtsp://, http(s)://, a file, camera:0)").fill(
            str(tmp_path / "hall.mp4")
        )
        page.get_by_label("Scene file on the server (for zones and lines)").fill(str(scene))
        page.get_by_role("button", name="Add camera").click()
        expect_text(page.locator("#camera-result"), "Camera hall-9 added and started")
        page.locator("button[data-draw='hall-9']").click()
        canvas = page.locator("#scene-canvas")
        expect_text(page.locator("#shapes"), "zone hall", timeout=30)  # the file's zone, drawn
        page.get_by_role("button", name="Start over").click()
        # a line alone: the crowding rule would lose its zone, so nothing is saved
        page.get_by_label("Draw").select_option("line")
        page.get_by_label("named").fill("door")
        page.get_by_label("line's in-direction").select_option("down")
        canvas.click(position={"x": 20, "y": 120})
        canvas.click(position={"x": 300, "y": 120})
        page.get_by_role("button", name="Save the scene").click()
        expect_text(page.locator("#scene-result"), "Not saved")
        assert "hall" in page.locator("#scene-result").inner_text()
        page.get_by_label("Draw").select_option("zone")
        page.get_by_label("named").fill("hall")
        for x, y in ((10, 10), (160, 10), (160, 230), (10, 230)):
            canvas.click(position={"x": x, "y": y})
        page.get_by_role("button", name="Finish zone").click()
        page.get_by_role("button", name="Save the scene").click()
        expect_text(page.locator("#scene-result"), "Saved 1 zone(s) and 1 line(s)")
        shot(page, "cameras")
        saved = tomllib.loads(scene.read_text())
        assert saved["rules"] == [{"type": "crowding", "zone": "hall", "max_count": 5}]
        (x0, _), _, (x2, y2), _ = saved["zones"]["hall"]["points"]
        assert (
            abs(x0 - 10 / 320) < 0.02
            and abs(y2 - 230 / 240) < 0.02
            and x2 == pytest.approx(0.5, abs=0.02)
        )
        assert saved["lines"]["door"]["in"] == "down"
        load_scene(scene)  # the pipeline reads it
        # and its settings change in place: the worker restarts with them
        page.locator("button[data-edit='hall-9']").click()
        page.get_by_label("Galleries to search (comma-separated, optional)").fill("wl-9")
        page.get_by_role("button", name="Save changes").click()
        expect_text(page.locator("#camera-result"), "Camera hall-9 changed and restarted")
        assert tomllib.loads(cameras.read_text())["camera"][0]["galleries"] == ["wl-9"]
        while OPEN:
            OPEN.pop().close()


# Text whose colour against its nearest opaque background is under WCAG AA's 4.5:1.
LOW_CONTRAST = """() => {
  const lum = (c) => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => v / 255)
      .map((v) => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
  const bg = (el) => {
    for (; el; el = el.parentElement) {
      const c = getComputedStyle(el).backgroundColor;
      if (!c.startsWith('rgba') || !c.endsWith(', 0)')) return c; }
    return 'rgb(255, 255, 255)'; };
  const bad = [];
  for (const el of document.querySelectorAll('body *')) {
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!el.offsetParent || !text) continue;
    const a = lum(getComputedStyle(el).color), b = lum(bg(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < 4.5) bad.push(`${el.tagName} ${el.textContent.trim().slice(0, 30)} ${ratio}`);
  }
  return bad;
}"""


def test_every_page_fits_a_tablet_and_labels_every_control(browser: Any, server: Server) -> None:
    context = browser.new_context(viewport={"width": 768, "height": 1024})
    OPEN.append(context)
    page = context.new_page()
    page.goto(server.url + "/")
    page.get_by_label("API key").fill(server.admin_key)
    page.keyboard.press("Enter")  # the form works from the keyboard
    page.locator("#signout").wait_for()
    unlabelled = """() => [...document.querySelectorAll('main input, main select')]
        .filter((i) => !i.labels || i.labels.length === 0).map((i) => i.id || i.outerHTML)"""
    for page_id in ("wall", "review", "enrol", "check", "subjects", "governance", "cameras"):
        page.goto(f"{server.url}/#{page_id}")
        page.locator(f"#nav-{page_id}[aria-current='page']").wait_for()
        assert page.evaluate("document.documentElement.scrollWidth <= innerWidth + 1"), page_id
        assert page.evaluate(unlabelled) == [], page_id
        assert page.evaluate("[...document.images].every((i) => i.alt)"), page_id
        assert page.evaluate(
            "[...document.querySelectorAll('button')].every((b) => b.innerText.trim())"
        )
        assert page.evaluate(LOW_CONTRAST) == [], page_id
    # the check itself catches faint text (it is not vacuous)
    page.evaluate(
        "() => { const p = document.createElement('p'); p.textContent = 'faint';"
        " p.style.color = '#bbb'; document.querySelector('main').append(p); }"
    )
    assert len(page.evaluate(LOW_CONTRAST)) == 1
    page.reload()
    page.locator("#signout").wait_for()
    page.keyboard.press("Tab")  # the skip link comes first, for keyboard users
    assert page.evaluate("document.activeElement.className") == "skip"


def test_fairness_reports_in_the_data_directory_are_listed_and_shown_sandboxed(
    browser: Any, server: Server
) -> None:
    folder = server.airside.settings.data_dir / "reports"
    folder.mkdir()
    (folder / "fairness-lfw.html").write_text(
        "<html><body><h1>Fairness on LFW</h1><script>document.title='ran'</script></body></html>"
    )
    (folder / "notes.txt").write_text("not a report")
    page = sign_in(browser, server, server.key_for("dpo-2", "auditor"))
    page.goto(server.url + "/#governance")
    button = page.locator("button[data-report='fairness-lfw.html']")
    button.click()
    frame = page.frame_locator("iframe[title='Selected report']")
    expect_text(frame.locator("h1"), "Fairness on LFW")
    assert frame.locator("html").evaluate("() => document.title") != "ran"  # no script ran
    assert "notes.txt" not in page.locator("#reports").inner_text()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_key}"}
    ) as c:
        assert c.get("/api/v1/reports/files/..%2Fairside.db").status_code == 404
        assert c.get("/api/v1/reports/files/notes.txt").status_code == 404
