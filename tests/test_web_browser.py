"""The clinician pages in a real headless Chromium (Debian's package, driven by Playwright).

The app runs on 127.0.0.1 with a real SQLite decision log; intakes are screened over HTTP with
an API key, then a physician signs in, works the queue and signs a decision off in the browser.
Screenshots go to test-artifacts/ (git-ignored) for people to look at.
"""
from __future__ import annotations

import os
import re
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
# axe-core from npm, installed by scripts/test.d/30-chromium.sh.
AXE = os.environ.get("SCREENING_AXE", "")
DESKTOP, PHONE = (1280, 900), (375, 740)
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
def live_pages(tmp_path_factory):
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
def browser(live_pages):
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser):
    contexts = []

    def _new_page(width: int = 1280, height: int = 900):
        # bypass_csp: axe-core is injected as a script the pages' policy (rightly) refuses.
        context = browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
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


def axe_violations(page) -> list:
    """axe-core's WCAG 2.1 A/AA and best-practice rules on the page as it is now."""
    if not AXE or not Path(AXE).exists():
        if os.environ.get("SCREENING_CHROMIUM"):
            pytest.fail(f"axe-core is missing ({AXE!r}) although scripts/test.d/30-chromium.sh ran")
        pytest.skip("no axe-core: scripts/test.sh installs it from npm")
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=AXE)
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}});
        return r.violations.map(v => [v.id, v.impact, v.nodes.slice(0, 3).map(n => n.target.join(' '))]);
    }""")
    return result


def assert_accessible(page, where: str) -> None:
    """axe-core at desktop and phone widths: no violation at all."""
    size = page.viewport_size
    for width, height in (DESKTOP, PHONE):
        page.set_viewport_size({"width": width, "height": height})
        violations = axe_violations(page)
        assert violations == [], (where, width, violations)
    page.set_viewport_size(size)


def screen_over_http(live_pages, name: str | dict) -> dict:
    _, base, key = live_pages
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


def focused(page) -> str:
    return page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()")


def tab_to(page, wanted, limit: int) -> None:
    """Press Tab (at most ``limit`` times) until ``wanted(focused element)`` holds; the caller
    asserts what it needs of the element that ends up focused."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if wanted(focused(page)):
            return


def focus_lands_on(page, element_id: str) -> bool:
    """Autofocus runs once the page has rendered: wait for it (up to the page timeout)."""
    page.wait_for_function("id => document.activeElement && document.activeElement.id === id", arg=element_id)
    return True


def test_physician_reads_and_confirms_an_exclusion(live_pages, new_page):
    app, base, _ = live_pages
    decision = screen_over_http(live_pages, "ineligible-several")
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
    row.get_by_role("link", name=subject).click()  # the subject is the link
    page.wait_for_url(f"{base}/decisions/{decision_id}")

    # What a clinician sees: outcome, flag, every reason with its message, evidence and source.
    summary = page.locator("section.summary")
    assert "Ineligible" in summary.inner_text() and "Review pending" in summary.inner_text()
    assert "confirm the exclusion, or override it" in summary.inner_text()
    # Ids and digest are collapsed until asked for.
    assert page.locator("details.record").get_attribute("open") is None
    assert not page.get_by_text(decision["ruleset"]["digest"]).is_visible()
    page.locator("details.record summary").click()
    assert page.get_by_text(decision["ruleset"]["digest"]).is_visible()
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
    # The actions fit an exclusion, and each button says what it means.
    buttons = page.locator("form.sign-off button[name=action]")
    assert buttons.all_inner_texts() == ["Confirm the exclusion: treatment must not go ahead",
                                         "Override the exclusion: treatment may go ahead despite the rules ticked"]
    shot(page, "03-decision")

    page.get_by_label("Note").fill("Blood pressure uncontrolled; discussed with the patient.")
    page.get_by_role("button", name="Confirm the exclusion").click()
    page.wait_for_url(re.compile(re.escape(f"{base}/decisions/{decision_id}?signed=") + ".*#confirmation"))
    assert focus_lands_on(page, "confirmation")  # the confirmation has the focus
    confirmation = page.locator("#confirmation")
    assert "Exclusion confirmed: treatment must not go ahead." in confirmation.inner_text()
    history = page.locator("table.history")
    assert "dr.ada" in history.inner_text() and "signed in to the clinician pages" in history.inner_text()
    assert "Exclusion confirmed" in history.inner_text()
    assert "Approved" not in page.locator("main").inner_text()
    assert "Exclusion confirmed" in page.locator("section.summary").inner_text()
    assert_accessible(page, "decision after a sign-off")
    shot(page, "04-signed-off")

    stored = app.extensions["store"].get_decision(decision_id)
    assert [(r.reviewer, r.outcome, r.credential) for r in stored.reviews] == [("dr.ada", "confirm", "session")]
    assert stored.body == decision

    page.goto(f"{base}/reviews?subject={subject}")
    assert page.get_by_text("No decisions match these filters.").is_visible()
    page.get_by_label("Review status").select_option("confirmed")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("table.queue tbody tr").count() == 1
    shot(page, "05-queue-confirmed")


def test_clinician_reads_but_gets_no_sign_off_form(live_pages, new_page):
    _, base, _ = live_pages
    decision = screen_over_http(live_pages, "review-substance-history")
    page = new_page()
    sign_in(page, base, "nurse.bo")
    page.goto(f"{base}/decisions/{decision['decision_id']}")
    assert page.get_by_text(decision["reasons"][0]["message"], exact=True).is_visible()
    assert page.get_by_text("Only a physician can sign off this decision.").is_visible()
    assert page.locator("button[name=action]").count() == 0
    assert_accessible(page, "clinician view")
    shot(page, "06-clinician-view")


def test_physician_works_the_queue_by_keyboard_on_a_phone_urgent_first(live_pages, new_page):
    """The issue's "done when": by keyboard, at phone width, urgent first; the first screen
    shows the decision and the first reasons; errors and confirmations take the focus."""
    app, base, _ = live_pages
    # Clear what earlier tests left pending, so that this queue is known.
    store = app.extensions["store"]
    waiting, _ = store.review_queue(limit=200)
    for item in waiting:
        action = {"ineligible": "confirm", "incomplete": "decline", "eligible": "decline"}[item.decision]
        store.add_review(item.decision_id, reviewer="dr.ada", outcome=action, note="cleared by the test",
                         credential="session", client="s-test")
    older = screen_over_http(live_pages, "review-substance-history")
    urgent = screen_over_http(live_pages, urgent_intake())
    assert urgent["urgent"]
    page = new_page(*PHONE)
    page.goto(f"{base}/login")
    tab_to(page, lambda f: f == "username", 10)
    assert focused(page) == "username"
    page.keyboard.type("dr.ada")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORDS["dr.ada"])
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/")
    assert "2 decisions waiting for a physician, 1 urgent" in page.locator("main").inner_text()
    assert_accessible(page, "home")

    page.goto(f"{base}/reviews")
    rows = page.locator("table.queue tbody tr")
    assert rows.count() == 2
    assert urgent["subject_id"] in rows.nth(0).inner_text() and "Urgent" in rows.nth(0).inner_text()
    assert older["subject_id"] in rows.nth(1).inner_text()
    assert no_horizontal_scroll(page)
    shot(page, "07-phone-queue", full_page=False)
    tab_to(page, lambda f: f == urgent["subject_id"], 30)
    assert focused(page) == urgent["subject_id"]
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/decisions/{urgent['decision_id']}")

    # The first screen: the decision, what to do, and the first reason.
    height = PHONE[1]
    assert page.locator("section.summary").bounding_box()["y"] < height
    first_reason = page.locator("article.reason").first.locator("h3")
    box = first_reason.bounding_box()
    assert box["y"] + box["height"] <= height, box
    assert page.locator("details.record").bounding_box()["y"] > height
    # Colour follows what the physician must do: urgent and pending is red, whatever the outcome.
    assert page.locator("section.summary").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(253, 236, 234)"
    shot(page, "08-phone-decision-first-screen", full_page=False)

    # Skip to the sign-off, submit without the required note: the error summary takes the focus.
    tab_to(page, lambda f: f == "Go to the sign-off", 20)
    page.keyboard.press("Enter")
    tab_to(page, lambda f: f.startswith("Decline"), 30)
    assert focused(page) == "Decline: treatment must not go ahead"
    with page.expect_navigation():
        page.keyboard.press("Enter")
    assert focus_lands_on(page, "form-errors")
    assert "A note is required to decline" in page.locator("#form-errors").inner_text()
    assert_accessible(page, "decision with sign-off errors")
    shot(page, "09-phone-sign-off-error", full_page=False)
    tab_to(page, lambda f: f == "note", 40)
    page.keyboard.type("Active suicidal intent: crisis team called, no ketamine now.")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # past Approve, to Decline
    assert focused(page) == "Decline: treatment must not go ahead"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(".*#confirmation"))
    assert focus_lands_on(page, "confirmation")
    shot(page, "10-phone-confirmation", full_page=False)
    # "Next in queue" is the next thing to tab to.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "next-in-queue"
    page.keyboard.press("Enter")
    page.wait_for_url(f"{base}/decisions/{older['decision_id']}")
    assert page.locator("section.summary").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(255, 244, 214)"
    [review] = store.get_decision(urgent["decision_id"]).reviews
    assert (review.outcome, review.reviewer) == ("decline", "dr.ada")


def test_every_page_passes_axe_at_desktop_and_phone_widths(live_pages, new_page):
    _, base, _ = live_pages
    pages = {name: screen_over_http(live_pages, name) for name in
             ("ineligible-several", "incomplete-no-vitals", "review-substance-history", "eligible-iv")}
    urgent = screen_over_http(live_pages, urgent_intake())
    page = new_page()
    page.goto(f"{base}/login")
    assert_accessible(page, "login")
    page.get_by_label("User name").fill("dr.ada")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    assert_accessible(page, "login error")
    sign_in(page, base, "dr.ada")
    for where in ("/", "/reviews", "/reviews?status=any", "/reviews?subject=nobody-here", "/reviews?subject=%3Cx%3E",
                  "/decisions/00000000-0000-0000-0000-000000000000",
                  *(f"/decisions/{d['decision_id']}" for d in (*pages.values(), urgent))):
        page.goto(base + where)
        assert_accessible(page, where)
    # The re-screen form, its errors, and the new decision it makes.
    first = pages["incomplete-no-vitals"]
    page.goto(f"{base}/decisions/{first['decision_id']}")
    page.get_by_role("button", name="Re-screen with these answers").click()
    assert "Give at least one of the missing answers" in page.locator("#form-errors").inner_text()
    assert_accessible(page, "re-screen errors")
    if "vitals.systolic_bp" in first["missing"]:
        page.get_by_label("Vital signs › Systolic blood pressure").fill("128")
    if "vitals.diastolic_bp" in first["missing"]:
        page.get_by_label("Vital signs › Diastolic blood pressure").fill("82")
    page.get_by_role("button", name="Re-screen with these answers").click()
    page.wait_for_url(re.compile(".*#confirmation"))
    page.get_by_role("link", name="Open the new decision").first.click()
    assert "A re-screen of" in page.locator("section.summary").inner_text()
    assert_accessible(page, "re-screened decision")
    shot(page, "11-rescreened")
    # The override form with its rule check-boxes.
    page.goto(f"{base}/decisions/{pages['ineligible-several']['decision_id']}")
    page.get_by_role("button", name="Override the exclusion").click()
    assert "Name every rule you override" in page.locator("#form-errors").inner_text()
    assert_accessible(page, "override errors")
    # Signed out: the old cookie no longer opens anything.
    cookies = page.context.cookies()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/login")
    assert_accessible(page, "signed out")
    page.context.add_cookies(cookies)
    page.goto(f"{base}/reviews")
    page.wait_for_url(f"{base}/login?next=/reviews")


def test_pages_reflow_at_400_percent_zoom_and_meet_contrast(live_pages, new_page):
    _, base, _ = live_pages
    decision = screen_over_http(live_pages, "ineligible-several")
    incomplete = screen_over_http(live_pages, "incomplete-no-vitals")
    urgent = screen_over_http(live_pages, urgent_intake())
    assert urgent["urgent"]
    # 1280 CSS px at 400% zoom is a 320 px wide viewport (WCAG 1.4.10).
    page = new_page(320, 256)
    page.goto(f"{base}/login")
    assert no_horizontal_scroll(page)
    shot(page, "12-login-400pct")
    sign_in(page, base, "dr.ada")
    for name, path in (("13-queue-400pct", "/reviews"),
                       ("14-decision-400pct", f"/decisions/{decision['decision_id']}"),
                       ("15-incomplete-400pct", f"/decisions/{incomplete['decision_id']}"),
                       ("16-urgent-400pct", f"/decisions/{urgent['decision_id']}")):
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
    shot(page, "17-queue-urgent")


def test_decision_prints_without_navigation_or_forms(live_pages, new_page):
    _, base, _ = live_pages
    decision = screen_over_http(live_pages, "ineligible-several")
    page = new_page(800, 1000)
    sign_in(page, base, "dr.ada")
    page.goto(f"{base}/decisions/{decision['decision_id']}")
    page.emulate_media(media="print")
    assert page.locator("form.sign-off").is_hidden()
    assert page.locator("header nav").is_hidden()
    assert page.get_by_text(decision["reasons"][0]["message"], exact=True).is_visible()
    shot(page, "18-decision-print")
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF")
    (ARTIFACTS / "18-decision-print.pdf").write_bytes(pdf)


def test_the_axe_check_finds_violations_when_there_are_some(live_pages, new_page):
    """The accessibility checks above are only worth their passes if axe really runs."""
    _, base, _ = live_pages
    page = new_page()
    page.goto(f"{base}/login")
    page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', '<img src=\"/x.png\">')")
    assert "image-alt" in [v[0] for v in axe_violations(page)]
