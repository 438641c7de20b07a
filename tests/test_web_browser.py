"""The clinician pages in a real headless Chromium (Debian's package, driven by Playwright).

The app runs on 127.0.0.1 with a real SQLite decision log; intakes are screened over HTTP with
an API key, then a physician signs in, works the queue and signs a decision off in the browser.
Screenshots go to test-artifacts/ (git-ignored) for people to look at.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from tests.conftest import ROOT, example
from tests.web_support import PASSWORDS, intake_key, make_app, unique_subject, with_subject

pytestmark = pytest.mark.browser
playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = os.environ.get("SCREENING_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = ROOT / "test-artifacts" / "web"

# WCAG 2.1 AA contrast of every visible text node against the colour behind it (walking up to the
# first opaque background). Returns the failures: [text, ratio, needed].
CONTRAST_JS = """
() => {
  const parse = (c) => { const m = c.match(/rgba?\\(([^)]+)\\)/); if (!m) return null;
    const p = m[1].split(',').map(Number); return {r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1}; };
  const lum = ({r, g, b}) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const background = (el) => { for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor); if (c && c.a > 0.5) return c; }
    return {r: 255, g: 255, b: 255, a: 1}; };
  const failures = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode; const el = node.parentElement;
    if (!node.textContent.trim() || !el) continue;
    const style = getComputedStyle(el); const box = el.getBoundingClientRect();
    if (style.visibility === 'hidden' || style.display === 'none' || box.width <= 1 || box.height <= 1) continue;
    const fg = parse(style.color); const bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize); const bold = parseInt(style.fontWeight) >= 700;
    const needed = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    if (ratio < needed) failures.push([node.textContent.trim().slice(0, 40), Math.round(ratio * 100) / 100, needed]);
  }
  return failures;
}
"""


class QuietHandler(WSGIRequestHandler):
    def log_request(self, *args, **kwargs) -> None:
        pass  # the app's own request log is enough


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("SCREENING_CHROMIUM"):
            pytest.fail(f"{CHROMIUM} is missing although scripts/test.d/30-chromium.sh ran")
        pytest.skip("no Chromium: scripts/test.sh installs Debian's chromium")
    monkeypatch = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("web-browser")
    # Production cookie settings (Secure): Chromium treats http://127.0.0.1 as a secure context.
    app = make_app(monkeypatch, tmp, f"sqlite:///{tmp}/decisions.sqlite3", cookie_secure=True)
    httpd = make_server("127.0.0.1", 0, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="web-test-server", daemon=True)
    thread.start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield app, f"http://127.0.0.1:{httpd.server_port}", intake_key(app)
    httpd.shutdown()
    thread.join(10)
    app.extensions["store"].close()
    monkeypatch.undo()


@pytest.fixture(scope="module")
def browser(server):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def _new_page(width: int = 1280, height: int = 900):
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield _new_page
    for context in contexts:
        context.close()


def urgent_intake() -> dict:
    raw = example("eligible-iv")
    raw["psychiatric_history"].update(suicidal_ideation="active", suicidal_plan_or_intent=True)
    return raw


def screen_over_http(server, name: str | dict) -> dict:
    _, base, key = server
    raw = example(name) if isinstance(name, str) else name
    response = requests.post(f"{base}/v1/screenings", json=with_subject(raw, unique_subject()),
                             headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(page, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORDS[username])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    assert page.get_by_text(f"Signed in as {username}").is_visible()


def shot(page, name: str, full_page: bool = True) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def test_physician_reads_and_signs_off_a_decision(server, new_page):
    app, base, _ = server
    decision = screen_over_http(server, "ineligible-several")
    subject, decision_id = decision["subject_id"], decision["decision_id"]
    assert len(decision["reasons"]) >= 3

    page = new_page()
    page.goto(f"{base}/reviews")
    page.wait_for_url(f"{base}/login?next=/reviews")
    shot(page, "01-login")
    sign_in(page, base, "dr.ada")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Review queue").click()
    page.wait_for_url(f"{base}/reviews")
    row = page.locator("table.queue tbody tr", has=page.get_by_text(subject, exact=True))
    assert row.count() == 1
    assert "Ineligible" in row.inner_text() and "Review pending" in row.inner_text()
    shot(page, "02-queue")
    row.get_by_role("link", name="Open").click()
    page.wait_for_url(f"{base}/decisions/{decision_id}")

    # What a clinician sees: outcome, flag, every reason with its message, evidence and source.
    summary = page.locator("section.summary")
    assert "Ineligible" in summary.inner_text() and "Review pending" in summary.inner_text()
    assert decision["ruleset"]["version"] in summary.inner_text()
    reasons = page.locator("article.reason")
    assert reasons.count() == len(decision["reasons"])
    for i, reason in enumerate(decision["reasons"]):
        card = reasons.nth(i)
        assert card.get_by_role("heading", name=reason["title"]).is_visible()
        assert card.get_by_text(reason["message"], exact=True).is_visible()
        # Each source spelled out: the reference, linked, and the section it rests on.
        for source in reason["sources"]:
            if source["kind"] != "software default":
                assert card.get_by_role("link", name=source["reference"]).first.is_visible()
            if source["section"]:
                assert source["section"] in card.inner_text()
        evidence = card.locator("table.evidence")
        for path, value in reason["evidence"].items():
            cell = evidence.locator("tr", has=page.locator(f"code:text-is('{path}')")).locator("td")
            assert str(value if not isinstance(value, bool) else ("yes" if value else "no")) in cell.inner_text()
    assert "192 mmHg" in reasons.nth(0).inner_text()
    shot(page, "03-decision")

    page.get_by_label("Approve").check()
    page.get_by_label("Note").fill("Blood pressure treated and rechecked; reviewed with the patient.")
    page.get_by_role("button", name="Record sign-off").click()
    page.wait_for_url(f"{base}/decisions/{decision_id}#reviews")
    assert page.get_by_role("status").inner_text().startswith("Your sign-off was recorded")
    history = page.locator("table.history")
    assert "dr.ada" in history.inner_text()
    assert "Approved" in history.inner_text()
    assert "Blood pressure treated and rechecked" in history.inner_text()
    assert "Approved" in page.locator("section.summary").inner_text()
    shot(page, "04-signed-off")

    stored = app.extensions["store"].get_decision(decision_id)
    assert [(r.reviewer, r.outcome) for r in stored.reviews] == [("dr.ada", "approve")]
    assert stored.body == decision

    page.goto(f"{base}/reviews?subject={subject}")
    assert page.get_by_text("No decisions match these filters.").is_visible()
    page.get_by_label("Review status").select_option("approved")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.queue tbody tr").count() == 1
    shot(page, "05-queue-approved")


def test_clinician_reads_but_gets_no_sign_off_form(server, new_page):
    _, base, _ = server
    decision = screen_over_http(server, "review-substance-history")
    page = new_page()
    sign_in(page, base, "nurse.bo")
    page.goto(f"{base}/decisions/{decision['decision_id']}")
    assert page.get_by_text(decision["reasons"][0]["message"], exact=True).is_visible()
    assert page.get_by_text("Only a physician can sign off this decision.").is_visible()
    assert page.locator("input[name=outcome]").count() == 0
    shot(page, "06-clinician-view")


def test_keyboard_alone_reaches_and_submits_the_sign_off(server, new_page):
    app, base, _ = server
    decision = screen_over_http(server, "review-substance-history")
    page = new_page()
    page.goto(f"{base}/login")
    focused = lambda: page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")
    for _ in range(10):
        page.keyboard.press("Tab")
        if focused() == "username":
            break
    assert focused() == "username"
    page.keyboard.type("dr.ada")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS["dr.ada"])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")

    page.goto(f"{base}/decisions/{decision['decision_id']}")
    page.keyboard.press("Tab")
    assert focused() == "Skip to main content"
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    reached = []
    for _ in range(80):
        page.keyboard.press("Tab")
        reached.append(focused())
        if reached[-1] == "outcome-approve":
            break
    assert reached[-1] == "outcome-approve", reached
    # Every stop on the way had a visible focus indicator.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Space")
    page.keyboard.press("Tab")
    assert focused() == "note"
    page.keyboard.type("Remission confirmed by the treating psychiatrist.")
    page.keyboard.press("Tab")
    assert focused() == "Record sign-off"
    shot(page, "07-keyboard-form", full_page=False)  # where the focus is
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/decisions/{decision['decision_id']}#reviews")
    reviews = app.extensions["store"].get_decision(decision["decision_id"]).reviews
    assert [(r.outcome, r.note) for r in reviews] == [("approve", "Remission confirmed by the treating psychiatrist.")]


def test_pages_reflow_at_400_percent_zoom_and_meet_contrast(server, new_page):
    _, base, _ = server
    decision = screen_over_http(server, "ineligible-several")
    incomplete = screen_over_http(server, "incomplete-no-vitals")
    urgent = screen_over_http(server, urgent_intake())
    assert urgent["urgent"]
    # 1280 CSS px at 400% zoom is a 320 px wide viewport (WCAG 1.4.10).
    page = new_page(320, 256)
    page.goto(f"{base}/login")
    assert no_horizontal_scroll(page)
    shot(page, "08-login-400pct")
    sign_in(page, base, "dr.ada")
    for name, path in (("09-queue-400pct", "/reviews"),
                       ("10-decision-400pct", f"/decisions/{decision['decision_id']}"),
                       ("11-incomplete-400pct", f"/decisions/{incomplete['decision_id']}"),
                       ("12-urgent-400pct", f"/decisions/{urgent['decision_id']}")):
        page.goto(base + path)
        assert no_horizontal_scroll(page), path
        assert page.evaluate(CONTRAST_JS) == [], path
        shot(page, name)
    # Wide screens too; urgent decisions are marked in the queue and on the page, in words.
    page.set_viewport_size({"width": 1280, "height": 900})
    for path in ("/reviews", f"/decisions/{decision['decision_id']}", f"/decisions/{urgent['decision_id']}"):
        page.goto(base + path)
        assert page.evaluate(CONTRAST_JS) == [], path
    assert "Urgent" in page.locator("section.summary").inner_text()
    page.goto(f"{base}/reviews")
    row = page.locator("table.queue tbody tr", has=page.get_by_text(urgent["subject_id"], exact=True))
    assert "Urgent" in row.inner_text()
    assert "Urgent" not in page.locator("table.queue tbody tr", has=page.get_by_text(
        decision["subject_id"], exact=True)).inner_text()
    shot(page, "13-queue-urgent")


def test_decision_prints_without_navigation_or_forms(server, new_page):
    _, base, _ = server
    decision = screen_over_http(server, "ineligible-several")
    page = new_page(800, 1000)
    sign_in(page, base, "dr.ada")
    page.goto(f"{base}/decisions/{decision['decision_id']}")
    page.emulate_media(media="print")
    assert page.locator("form.sign-off").is_hidden()
    assert page.locator("header nav").is_hidden()
    assert page.get_by_text(decision["reasons"][0]["message"], exact=True).is_visible()
    shot(page, "14-decision-print")
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF")
    (ARTIFACTS / "14-decision-print.pdf").write_bytes(pdf)
