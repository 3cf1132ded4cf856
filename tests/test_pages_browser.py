"""The review page and the report in a real headless Chromium: no console error, the
numbers `check` prints, a filter that narrows, a click to a message, the unreachable
first. Screenshots at 1280 and 390 px wide land in bench/out/ for a person to look at."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SHOTS = Path(__file__).resolve().parent.parent / "bench" / "out"
WIDTHS = (1280, 390)

ROWS = [
    ["Ann Lee", "ann@example.com", "+1 555 0001", "A-1", "49.00"],
    ["Ann Lee", "ann@example.com", "+1 555 0001", "A-3", "5.00"],
    ["Bob Stone", "fail-550@example.com", "+1 555 0002", "A-2", "19.00"],
    ["Bob Stone", "fail-550@example.com", "+1 555 0002", "A-5", "9.00"],
    ["Cat Ray", "cat@@example.com", "+1 555 0003", "A-6", "3.00"],
    ["Cat Ray", "cat@@example.com", "+1 555 0003", "A-7", "4.00"],
    ["Zoë O'Brien", "zoe@example.org", "", "A-4", "7.50"],
    ["Dan Poe", "dan@gmial.com", "+1 555 0004", "A-8", "1.00"],
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium for the module, from the system's packages (never downloaded)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing; install chromium chromium-driver")
        pytest.skip(f"{', '.join(missing)} missing (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1280, 900)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(driver, path: Path) -> None:  # type: ignore[no-untyped-def]
    driver.get(path.resolve().as_uri())
    errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []


def screenshots(driver, name: str) -> None:  # type: ignore[no-untyped-def]
    """The whole page at each width, for a person to look at."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width in WIDTHS:
        driver.set_window_size(width, 900)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height, 600), 4000))
        driver.save_screenshot(str(SHOTS / f"{name}-{width}.png"))
    driver.set_window_size(1280, 900)


def check_counts(output: str) -> dict[str, int]:
    """The counts `notify check` prints, by the review page's keys."""
    found = {}
    for key, label in [
        ("recipients", "recipients"),
        ("rejected", "rejected"),
        ("lookalikes", "look-alikes"),
        ("review", "addresses to review"),
    ]:
        match = re.search(rf"^  {label}\s+(\d+)$", output, re.M)
        assert match, output
        found[key] = int(match.group(1))
    return found


def test_the_review_page_counts_filters_and_opens_a_message(browser, workspace, run_cli):
    from selenium.webdriver.common.by import By

    workspace.rows(ROWS)
    checked = run_cli(workspace, "check", "--incident", "42", "--offline")
    preview = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert preview.exit_code == 0, preview.output
    open_page(browser, workspace.root / "previews" / "incident-42" / "index.html")
    shown = {
        box.get_attribute("data-count"): int(box.find_element(By.TAG_NAME, "b").text)
        for box in browser.find_elements(By.CSS_SELECTOR, "[data-count]")
    }
    assert {k: shown[k] for k in check_counts(checked.output)} == check_counts(checked.output)
    assert shown["held-back"] == 1  # dan@gmial.com
    rows = browser.find_elements(By.CSS_SELECTOR, "#messages tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[2].text for r in rows] == [
        "ann@example.com",
        "fail-550@example.com",
        "zoe@example.org",
    ]
    assert rows[0].find_elements(By.TAG_NAME, "td")[3].text == "2"  # two orders
    screenshots(browser, "review")
    browser.find_element(By.ID, "filter").send_keys("zoë")
    visible = [r for r in rows if r.is_displayed()]
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in visible] == ["Zoë O'Brien"]
    assert browser.find_element(By.ID, "shown").text == "1 shown"
    visible[0].find_element(By.TAG_NAME, "a").click()
    assert browser.current_url.endswith("/messages/000003.html")
    assert "Dear Zoë O'Brien" in browser.find_element(By.ID, "text-part").text
    screenshots(browser, "message")
    browser.switch_to.frame(browser.find_element(By.ID, "html-part"))
    assert browser.find_element(By.TAG_NAME, "p").text == "Dear Zoë O'Brien,"
    browser.switch_to.default_content()


def test_the_report_page_has_one_row_per_customer_the_unreachable_first(
    browser, workspace, run_cli, smtp_server
):
    from selenium.webdriver.common.by import By

    workspace.rows(ROWS)
    workspace.smtp(smtp_server)
    sent = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert sent.exit_code == 1, sent.output  # one refused
    page = workspace.root / "report.html"
    made = run_cli(workspace, "report", "--incident", "42", "--format", "html", "-o", str(page))
    assert made.exit_code == 0, made.output
    assert made.output.endswith(": 3 unreachable, 0 not yet delivered, 2 delivered.\n")
    open_page(browser, page)
    rows = browser.find_elements(By.CSS_SELECTOR, "#customers tbody tr")
    cells = [
        {td.get_attribute("data-label"): td.text for td in r.find_elements(By.TAG_NAME, "td")}
        for r in rows
    ]
    assert [
        tuple(c[k] for k in ("Outcome", "Name", "Phone", "Reason", "Items")) for c in cells
    ] == [
        ("unreachable", "Bob Stone", "+1 555 0002", "no such mailbox", "2"),
        ("unreachable", "Cat Ray", "+1 555 0003", "invalid address", "2"),
        ("unreachable", "Dan Poe", "+1 555 0004", "likely typo in the address; held back", "1"),
        ("delivered", "Ann Lee", "+1 555 0001", "delivered", "2"),
        ("delivered", "Zoë O'Brien", "", "delivered", "1"),
    ]
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart rect.accepted")) >= 1
    screenshots(browser, "report")
