"""The web UI at `/`, end to end in headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
selenium): a real `switchyard serve` with mock upstreams behind it, used the way an operator does: sign
in (and be refused), read the dashboard, send traffic, find a request in the logs and open its attempt
trail, create and edit a virtual key with a budget and watch its usage move, teams and customers, the
providers' live health, the residency report (checked against `switchyard check --explain`), and strings
such as `<script>` shown as text.

Every page is photographed into `target/ui-screenshots/` (or `$SWITCHYARD_UI_SCREENSHOTS`) for a person to
look at. Waits poll for what the page shows (reloading where the page would only refresh later); nothing
here asserts how long anything took.

`SWITCHYARD_CHROMIUM` and `SWITCHYARD_CHROMEDRIVER` point at other binaries than /usr/bin/chromium and
/usr/bin/chromedriver; `SWITCHYARD_SKIP_BROWSER=1` skips this file (for a machine without them).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from conftest import BIN, REPO_ROOT, Gateway, Mock, Procs, http_json

if os.environ.get("SWITCHYARD_SKIP_BROWSER") == "1":
    pytest.skip("SWITCHYARD_SKIP_BROWSER=1", allow_module_level=True)

# Selenium Manager must never try to download a browser or driver (there is no network to do it with).
os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

CHROMIUM = os.environ.get("SWITCHYARD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = os.environ.get("SWITCHYARD_CHROMEDRIVER") or shutil.which("chromedriver") or "/usr/bin/chromedriver"
SHOTS = Path(os.environ.get("SWITCHYARD_UI_SCREENSHOTS") or REPO_ROOT / "target" / "ui-screenshots")
TOKEN = "ui-test-admin-" + secrets.token_hex(8)
WIDTH = 1400
WAIT_S = 30.0

XSS_KEY = '<img src=x onerror="window.__xss=1">'
XSS_TEAM = "<script>window.__xss=2</script>"
XSS_MODEL = "openai/<img src=x onerror=window.__xss=3>"


# ---------------------------------------------------------------------------------------------------------
# The gateway and the browser
# ---------------------------------------------------------------------------------------------------------


@dataclass
class UI:
    gateway: Gateway
    config_path: Path

    @property
    def url(self) -> str:
        return self.gateway.url

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, data = http_json(method, self.url + path, body, headers={"authorization": f"Bearer {TOKEN}"})
        assert status == 200, f"{method} {path}: {status} {data!r}"
        return data

    def new_key(self, name: str, **extra: Any) -> tuple[str, str]:
        """A virtual key made through the API: (id, value)."""
        k = self.admin("POST", "/api/governance/virtual-keys", {"name": name, **extra})["virtual_key"]
        return k["id"], k["value"]

    def chat(self, value: str, model: str = "openai/gpt-4o-mini", request_id: str | None = None) -> tuple[int, dict]:
        headers = {"authorization": f"Bearer {value}"}
        if request_id:
            headers["x-request-id"] = request_id
        req = urllib.request.Request(
            self.url + "/v1/chat/completions",
            data=f'{{"model": {json_str(model)}, "messages": [{{"role": "user", "content": "hello from the UI test"}}]}}'.encode(),
            method="POST",
            headers={"content-type": "application/json", **headers},
        )
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                return r.status, dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers)


def json_str(s: str) -> str:
    import json

    return json.dumps(s)


@pytest.fixture(scope="module")
def ui(procs: Procs, mocks: dict[str, Mock], tmp_path_factory: pytest.TempPathFactory) -> Iterator[UI]:
    data_dir = tmp_path_factory.mktemp("ui-data")
    config = {
        "providers": {
            "openai": {
                "type": "openai",
                "base_url": mocks["openai"].url,
                "keys": [{"name": "main", "value": "sk-ui-openai-secret-1234"}],
                "tags": ["cloud"],
            },
            # Fails every request (529): the route below falls back to openai. Used only by the fallback test, so
            # its health is what one failure leaves.
            "flaky": {
                "type": "openai",
                "base_url": mocks["flaky"].url,
                "keys": [{"name": "flaky-key", "value": "sk-ui-flaky-secret-9876"}],
                "tags": ["cloud"],
            },
            # The same failing upstream under another name, for the providers page's health.
            "broken": {"type": "openai", "base_url": mocks["flaky"].url, "keys": [{"name": "broken-key", "value": "sk-ui-broken-5555"}]},
            "local": {"type": "ollama", "base_url": mocks["local"].url, "tags": ["on-prem"]},
        },
        "routes": [{"models": ["flaky/gpt-4o-mini"], "fallbacks": ["openai/gpt-4o-mini"]}],
        "governance": {
            "virtual_keys": [
                {"id": "vk-ui-onprem", "name": "onprem-only", "value": "sk-ui-onprem-key", "residency": {"allowed_tags": ["on-prem"]}}
            ]
        },
    }
    gw = procs.gateway(config, "--data-dir", str(data_dir), name="gateway-ui", env={"SWITCHYARD_ADMIN_TOKEN": TOKEN})
    try:
        assert gw.config_path is not None
        yield UI(gw, gw.config_path)
    finally:
        procs.stop(gw.proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    for what, path, pkg in [("Chromium", CHROMIUM, "chromium"), ("chromedriver", CHROMEDRIVER, "chromium-driver")]:
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            pytest.fail(
                f"{what} not found at {path}: install Debian's {pkg} (apt-get install chromium chromium-driver; .ci/run does), "
                "or set SWITCHYARD_SKIP_BROWSER=1 to skip the browser tests",
                pytrace=False,
            )
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
              "--disable-extensions", "--disable-background-networking", f"--window-size={WIDTH},900", "--lang=en-US"]:
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield d
    finally:
        d.quit()


_loads = 0


def open_page(d: webdriver.Chrome, ui: UI, hash_: str) -> None:
    """Loads the UI afresh at `#/...` (a full page load, as a bookmark would; the tab's session stays)."""
    global _loads
    _loads += 1
    d.get(f"{ui.url}/?load={_loads}{hash_}")


def eventually(what: str, check: Callable[[], Any], timeout: float = WAIT_S, every: float = 0.3) -> Any:
    """Polls `check` until it returns something truthy; fails naming `what` (and the last error) otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = check()
            if v:
                return v
        except (WebDriverException, StaleElementReferenceException, AssertionError, LookupError) as e:
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last: {last})" if last else ""))


def el(d: webdriver.Chrome, css: str) -> WebElement:
    return eventually(f"element {css}", lambda: next(iter(e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None))


def text_of(d: webdriver.Chrome, css: str) -> str:
    return " ".join(e.text for e in d.find_elements(By.CSS_SELECTOR, css))


def shot(d: webdriver.Chrome, name: str) -> Path:
    """A screenshot of the whole page, beyond the window's height (Chromium's DevTools protocol)."""
    import base64

    d.execute_script("window.scrollTo(0, 0)")
    size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": max(WIDTH, size["width"]), "height": min(size["height"], 10000), "scale": 1}
    png = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
    path = SHOTS / f"{name}.png"
    path.write_bytes(base64.b64decode(png))
    return path


def page_errors(d: webdriver.Chrome) -> list[str]:
    """Script errors the page logged (a failed API call is shown in the page and logged by Chromium as a
    network error, which is not counted here)."""
    return [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE" and e.get("source") != "network"]


def sign_in(d: webdriver.Chrome, ui: UI) -> None:
    open_page(d, ui, "#/login")
    d.execute_script("sessionStorage.clear()")
    open_page(d, ui, "#/login")
    el(d, "#token").send_keys(TOKEN)
    el(d, "#login-submit").click()
    el(d, "#page-dashboard")


def row_with(d: webdriver.Chrome, css: str, text: str) -> WebElement:
    """The first row matching `css` whose text contains `text`."""
    return eventually(f"a row {css} with {text!r}", lambda: next(iter(r for r in d.find_elements(By.CSS_SELECTOR, css) if text in r.text), None))


def entity_row(d: webdriver.Chrome, name: str) -> WebElement:
    def find():
        for r in d.find_elements(By.CSS_SELECTOR, "tr.entity-row"):
            if r.get_attribute("data-name") == name:
                return r
        return None

    return eventually(f"the row of {name!r}", find)


# ---------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------


def test_the_ui_is_served_with_a_strict_policy_and_nothing_from_elsewhere(ui: UI) -> None:
    with urllib.request.urlopen(ui.url + "/", timeout=10) as r:
        html = r.read().decode()
        csp = r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-type"].startswith("text/html")
        etag = r.headers["etag"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # Every script and style the shell loads comes from the gateway itself, and no script is inline.
    srcs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert srcs and all(s.startswith("/ui/") or s.startswith("#") for s in srcs), srcs
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "an inline script"
    for path in ["/ui/app.js", "/ui/lib.js", "/ui/chart.js", "/ui/app.css"]:
        with urllib.request.urlopen(ui.url + path, timeout=10) as r:
            body = r.read().decode()
            assert r.headers["content-security-policy"] == csp
            assert r.headers["content-type"].startswith("text/css" if path.endswith(".css") else "text/javascript")
        body = body.replace("http://www.w3.org/2000/svg", "")  # the SVG namespace's name, never fetched
        assert "http://" not in body and "https://" not in body, f"{path} names another origin"
    # A reload costs a 304.
    req = urllib.request.Request(ui.url + "/", headers={"if-none-match": etag})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 304
    status, body = http_json("GET", ui.url + "/ui/nothing.js")
    assert status == 404 and body["error"]["code"] == "unknown_route"


def test_sign_in_refuses_a_wrong_token_and_sign_out_forgets_the_right_one(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    open_page(d, ui, "#/dashboard")
    d.execute_script("sessionStorage.clear()")
    open_page(d, ui, "#/dashboard")
    # Without a token every page is the sign-in form.
    el(d, "#login-form")
    assert not d.find_element(By.ID, "nav").is_displayed()
    shot(d, "01-login")
    el(d, "#token").send_keys("not-the-token")
    el(d, "#login-submit").click()
    msg = eventually("the refusal", lambda: text_of(d, "#login-message .error"))
    assert "refused this token" in msg and "admin_unauthorized" in msg
    assert d.execute_script("return sessionStorage.getItem('switchyard.admin_token')") is None
    shot(d, "02-login-refused")

    token = el(d, "#token")
    token.clear()
    token.send_keys(TOKEN)
    el(d, "#login-submit").click()
    el(d, "#page-dashboard")
    assert d.find_element(By.ID, "nav").is_displayed()
    assert d.execute_script("return sessionStorage.getItem('switchyard.admin_token')") == TOKEN

    el(d, "#logout").click()
    el(d, "#login-form")
    assert d.execute_script("return sessionStorage.getItem('switchyard.admin_token')") is None
    open_page(d, ui, "#/virtual-keys")
    el(d, "#login-form")


def test_a_token_the_gateway_stops_accepting_sends_the_tab_back_to_sign_in(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    sign_in(d, ui)
    d.execute_script("sessionStorage.setItem('switchyard.admin_token', 'a-token-from-before-a-restart')")
    open_page(d, ui, "#/virtual-keys")
    msg = eventually("the expiry notice", lambda: text_of(d, "#login-message"))
    assert "no longer accepts" in msg
    assert d.execute_script("return sessionStorage.getItem('switchyard.admin_token')") is None


def test_dashboard_shows_requests_per_key_and_the_residency_split(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    name = f"ui-dash-{secrets.token_hex(3)}"
    _, value = ui.new_key(name)
    for model in ["openai/gpt-4o-mini"] * 3 + ["local/llama3.2:latest"]:
        assert ui.chat(value, model)[0] == 200
    sign_in(d, ui)

    def grouped_row():
        open_page(d, ui, "#/dashboard?range=1h&group=virtual_key")
        el(d, "#dash-kpis .kpi, #dash-kpis .error")
        rows = [r for r in d.find_elements(By.CSS_SELECTOR, "#dash-grouped tr.group-row") if r.find_elements(By.TAG_NAME, "td")[0].text == name]
        return rows[0] if rows and rows[0].find_elements(By.TAG_NAME, "td")[1].text == "4" else None

    row = eventually(f"the dashboard's row for {name} with 4 requests", grouped_row)
    assert "0 (0" in row.find_elements(By.TAG_NAME, "td")[2].text, "no errors"
    assert int(text_of(d, "#kpi-requests .kpi-value").replace(",", "")) >= 4
    # The residency split: three of four requests went to the cloud provider, one to the on-prem one.
    split = next(r for r in d.find_elements(By.CSS_SELECTOR, "#dash-split .split-row") if r.find_element(By.CSS_SELECTOR, ".split-name").text == name)
    legend = split.find_element(By.CSS_SELECTOR, ".split-legend").text
    assert re.search(r"cloud 75\.0 %", legend) and re.search(r"on-prem 25\.0 %", legend), legend
    eventually("the overall charts", lambda: d.find_elements(By.CSS_SELECTOR, "#dash-overall svg.chart-svg path.line"))
    shot(d, "03-dashboard")
    assert not page_errors(d)


def test_logs_explorer_finds_a_fallback_and_shows_its_attempt_trail(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    name = f"ui-logs-{secrets.token_hex(3)}"
    key_id, value = ui.new_key(name)
    request_id = f"ui-fallback-{secrets.token_hex(6)}"
    status, headers = ui.chat(value, "flaky/gpt-4o-mini", request_id=request_id)
    assert status == 200 and headers["x-request-id"] == request_id and headers["x-switchyard-attempts"] == "2"
    sign_in(d, ui)
    open_page(d, ui, "#/logs")
    # The filters, as a person sets them: the key from the list, then Apply.
    Select(el(d, "#f-vk")).select_by_visible_text(name)
    el(d, "#f-apply").click()
    eventually("the key in the address", lambda: f"virtual_key={key_id}" in d.current_url)

    def listed():
        rows = d.find_elements(By.CSS_SELECTOR, "#logs-results tr.log-row")
        if not rows:
            open_page(d, ui, f"#/logs?virtual_key={key_id}")
            return None
        return rows

    rows = eventually("the request in the log", listed)
    assert len(rows) == 1 and rows[0].get_attribute("data-id") == request_id
    assert "fallback" in rows[0].text and "openai/gpt-4o-mini" in rows[0].text and "200" in rows[0].text
    shot(d, "04-logs")
    rows[0].find_element(By.CSS_SELECTOR, "a.log-link").click()
    assert el(d, "#detail-id").text == request_id
    attempts = d.find_elements(By.CSS_SELECTOR, "#log-detail tr.attempt")
    assert len(attempts) == 2, [a.text for a in attempts]
    first, second = [[td.text for td in a.find_elements(By.TAG_NAME, "td")] for a in attempts]
    # #, target, key, status, class, started, latency, hedged, message
    assert first[1:5] == ["flaky/gpt-4o-mini", "flaky-key", "529", "transient"], first
    assert second[1:5] == ["openai/gpt-4o-mini", "main", "200", "success"], second
    assert first[7] == "no" and second[7] == "no"
    facts = text_of(d, "#log-detail dl.facts")
    assert "target 2 of the plan served it" in facts and name in facts
    assert len(eventually("the attempt timeline", lambda: d.find_elements(By.CSS_SELECTOR, "#log-detail svg.waterfall rect"))) == 2
    shot(d, "05-log-detail")
    el(d, "#back-to-logs").click()
    eventually("the filtered list again", lambda: f"virtual_key={key_id}" in d.current_url and d.find_elements(By.CSS_SELECTOR, "tr.log-row"))
    assert not page_errors(d)


def test_logs_are_paged_on_the_server(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    key_id, value = ui.new_key(f"ui-pages-{secrets.token_hex(3)}")
    for _ in range(27):
        assert ui.chat(value)[0] == 200
    sign_in(d, ui)

    def full_first_page():
        open_page(d, ui, f"#/logs?virtual_key={key_id}&limit=25")
        el(d, "#logs-results .pager, #logs-results .error")
        return len(d.find_elements(By.CSS_SELECTOR, "tr.log-row")) == 25 and d.find_element(By.ID, "page-older").is_enabled()

    eventually("a first page of 25 with an older one after it", full_first_page)
    first_ids = [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "tr.log-row")]
    el(d, "#page-older").click()
    eventually("the second page", lambda: "cursor=" in d.current_url and len(d.find_elements(By.CSS_SELECTOR, "tr.log-row")) == 2)
    second_ids = [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "tr.log-row")]
    assert not set(first_ids) & set(second_ids)
    assert not d.find_element(By.ID, "page-older").is_enabled()
    assert "page 2" in text_of(d, ".pager")
    el(d, "#page-newer").click()
    eventually("the first page again", lambda: [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "tr.log-row")] == first_ids)


def test_create_a_virtual_key_with_a_budget_and_watch_its_usage_move(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    name = f"ui-budget-{secrets.token_hex(3)}"
    sign_in(d, ui)
    open_page(d, ui, "#/virtual-keys")
    el(d, "#entity-new").click()
    el(d, "#ef-name").send_keys(name)
    el(d, "#ef-budget").send_keys("5")
    Select(el(d, "#ef-budget-period")).select_by_value("1d")
    el(d, "#ef-requests").send_keys("100")
    Select(el(d, "#ef-requests-period")).select_by_value("1h")
    shot(d, "06-virtual-key-form")
    el(d, "#ef-save").click()
    value = el(d, "#created-value").text
    assert value.startswith("sk-sy-")
    row = entity_row(d, name)
    assert "$0 / $5.00 per 1d" in row.text and "0 / 100 per 1h" in row.text, row.text

    costs = 0.0
    for _ in range(3):
        status, headers = ui.chat(value)
        assert status == 200
        costs += float(headers["x-switchyard-cost"])
    assert costs > 0
    # The list refreshes itself every few seconds: the meters move without a reload.
    eventually("3 requests on the key's meter", lambda: "3 / 100 per 1h" in entity_row(d, name).text)
    row = entity_row(d, name)
    assert "$0 / $5.00" not in row.text, "the budget meter moved"
    shot(d, "07-virtual-keys-usage")

    # Edit: a higher budget. The key keeps its value (callers are not locked out) and its use so far.
    row.find_element(By.CSS_SELECTOR, "button.edit").click()
    budget = el(d, "#ef-budget")
    assert budget.get_attribute("value") == "5"
    budget.clear()
    budget.send_keys("7")
    el(d, "#ef-save").click()
    eventually("the saved notice", lambda: "Saved virtual key" in text_of(d, "#entity-form-box .notice"))
    assert ui.chat(value)[0] == 200
    eventually("the new budget and 4 requests", lambda: "/ $7.00 per 1d" in entity_row(d, name).text and "4 / 100 per 1h" in entity_row(d, name).text)
    assert not page_errors(d)


def test_teams_and_customers_are_created_through_the_ui(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    suffix = secrets.token_hex(3)
    sign_in(d, ui)
    open_page(d, ui, "#/customers")
    el(d, "#entity-new").click()
    el(d, "#ef-id").send_keys(f"acme-{suffix}")
    el(d, "#ef-name").send_keys(f"Acme {suffix}")
    el(d, "#ef-budget").send_keys("20")
    el(d, "#ef-save").click()
    eventually("the saved notice", lambda: "Saved customer" in text_of(d, "#entity-form-box .notice"))
    assert "$0 / $20.00 per 1M" in entity_row(d, f"Acme {suffix}").text
    shot(d, "08-customers")

    open_page(d, ui, "#/teams")
    el(d, "#entity-new").click()
    el(d, "#ef-id").send_keys(f"vision-{suffix}")
    el(d, "#ef-name").send_keys(f"Vision {suffix}")
    Select(el(d, "#ef-customer")).select_by_value(f"acme-{suffix}")
    el(d, "#ef-budget").send_keys("10")
    el(d, "#ef-allowed-tags").send_keys("on-prem")
    el(d, "#ef-save").click()
    eventually("the saved notice", lambda: "Saved team" in text_of(d, "#entity-form-box .notice"))
    row = entity_row(d, f"Vision {suffix}")
    assert f"acme-{suffix}" in row.text and "only on-prem" in row.text and "$0 / $10.00 per 1M" in row.text, row.text
    team = ui.admin("GET", f"/api/governance/teams/vision-{suffix}")["team"]
    assert team["customer_id"] == f"acme-{suffix}" and team["residency"]["allowed_tags"] == ["on-prem"]

    shot(d, "09-teams")
    # A write the gateway refuses says why, in the form, with the path of each problem.
    open_page(d, ui, "#/virtual-keys")
    el(d, "#entity-new").click()
    el(d, "#ef-name").send_keys(f"both-{suffix}")
    Select(el(d, "#ef-team")).select_by_value(f"vision-{suffix}")
    Select(el(d, "#ef-customer")).select_by_value(f"acme-{suffix}")
    el(d, "#ef-save").click()
    err = eventually("the refusal", lambda: text_of(d, "#entity-form .error"))
    assert "400 invalid_governance" in err and "not both" in err and "virtual_keys" in err, err
    assert not [k for k in ui.admin("GET", "/api/governance/virtual-keys")["virtual_keys"] if k["name"] == f"both-{suffix}"]
    shot(d, "10-refused-write")
    assert not page_errors(d)


def test_providers_show_masked_keys_and_live_health(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    sign_in(d, ui)
    open_page(d, ui, "#/providers")
    card = el(d, "section.provider[data-provider='openai']")
    assert "…1234" in card.text and "main" in card.text and "cloud" in card.text
    assert "sk-ui-openai-secret-1234" not in d.page_source, "a provider key's value"
    stamp = el(d, "#providers-updated").text
    # Failures at the broken provider reach the page by its own refresh, without a reload.
    _, value = ui.new_key(f"ui-health-{secrets.token_hex(3)}")
    before = el(d, "section.provider[data-provider='broken']").text
    for _ in range(3):
        ui.chat(value, "broken/gpt-4o-mini")

    def failures_shown():
        t = d.find_element(By.CSS_SELECTOR, "section.provider[data-provider='broken']").text
        m = re.search(r"Signals \(failures\)\s+(\d+) \((\d+)\)", t)
        return m and int(m.group(2)) >= 1 and t != before

    eventually("the broken provider's failures", failures_shown)
    assert el(d, "#providers-updated").text != stamp
    shot(d, "11-providers")
    assert not page_errors(d)


def test_residency_report_matches_check_explain(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    out = subprocess.run([str(BIN), "check", "--explain", "--config", str(ui.config_path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    expected: dict[str, str] = {}
    section = False
    for line in out.stdout.splitlines():
        if line.strip().startswith('virtual key "onprem-only"'):
            section = True
            continue
        if section:
            m = re.match(r"\s+(reaches|never)\s+(\S+) \[", line)
            if not m:
                break
            expected[m.group(2)] = m.group(1)
    assert expected == {"openai": "never", "flaky": "never", "broken": "never", "local": "reaches"}, out.stdout
    sign_in(d, ui)
    open_page(d, ui, "#/residency")
    card = eventually("the onprem-only key", lambda: next(iter(c for c in d.find_elements(By.CSS_SELECTOR, "section.residency-key") if c.get_attribute("data-key") == "onprem-only"), None))
    shown = {r.get_attribute("data-provider"): "reaches" if "reach" == r.get_attribute("class") else "never" for r in card.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert shown == expected
    assert "only providers tagged on-prem" in card.text and "residency forbids it" in card.text
    shot(d, "12-residency")
    assert not page_errors(d)


def test_strings_from_callers_are_shown_as_text_never_run(ui: UI, browser: webdriver.Chrome) -> None:
    d = browser
    key_id, value = ui.new_key(XSS_KEY)
    ui.admin("POST", "/api/governance/teams", {"id": f"xss-{secrets.token_hex(3)}", "name": XSS_TEAM})
    status, _ = ui.chat(value, XSS_MODEL)
    assert status >= 400
    sign_in(d, ui)

    def clean():
        assert d.execute_script("return window.__xss") is None, "a caller's string ran as script"
        assert not d.find_elements(By.CSS_SELECTOR, "img[src='x']"), "a caller's string became markup"
        assert len(d.find_elements(By.TAG_NAME, "script")) == 1

    open_page(d, ui, "#/virtual-keys")
    assert entity_row(d, XSS_KEY).find_element(By.CSS_SELECTOR, "strong.name").text == XSS_KEY
    clean()
    shot(d, "13-xss-virtual-keys")
    open_page(d, ui, "#/teams")
    assert entity_row(d, XSS_TEAM).find_element(By.CSS_SELECTOR, "strong.name").text == XSS_TEAM
    clean()
    open_page(d, ui, "#/residency")
    eventually("the key's card", lambda: any(c.get_attribute("data-key") == XSS_KEY for c in d.find_elements(By.CSS_SELECTOR, "section.residency-key")))
    clean()

    def logged():
        open_page(d, ui, f"#/logs?virtual_key={key_id}")
        el(d, "#logs-results .pager, #logs-results .error")
        return [m.text for m in d.find_elements(By.CSS_SELECTOR, "tr.log-row .model")]

    assert eventually("the request with the odd model name", logged) == [XSS_MODEL]
    clean()
    shot(d, "14-xss-logs")
    row = d.find_element(By.CSS_SELECTOR, "tr.log-row")
    row.find_element(By.CSS_SELECTOR, "a.log-link").click()
    eventually("the detail", lambda: XSS_MODEL in text_of(d, "#log-detail dl.facts") and XSS_KEY in text_of(d, "#log-detail dl.facts"))
    clean()
    assert not page_errors(d)
