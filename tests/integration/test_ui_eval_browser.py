"""The web UI's Evaluate step in a real browser (Debian's chromium, headless, through Selenium).

A tiny LoRA job is made through the HTTP API on four question / answer rows; the page opens it from the URL
(`#job=...`), and the before / after comparison runs from the Evaluate section on a file holding those four rows
plus one the base answers perfectly (its own answer is the reference): the chart shows exact match higher for the
fine-tuned model, the memorised rows are listed as better and the base's own row as worse. A reload brings the same
evaluation back from the server; Chinese and a phone-width window work too. Screenshots go to tmp_path/screens.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402
import ui_browser_kit  # noqa: E402
from ui_browser_kit import Page  # noqa: E402

server, browser = ui_browser_kit.server, ui_browser_kit.browser

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

QA = [("What color is the sky?", "Blue."), ("What color is grass?", "Green."), ("What color is the sun?", "Yellow."),
      ("What color is snow?", "White.")]
FAST = {"train.max_steps": 60, "train.learning_rate": 1e-2, "train.warmup_ratio": 0, "train.save_steps": 0,
        "method.r": 8, "data.cutoff_len": 64, "train.batch_size": 4}
STORY = "Tell me a story."


def chat_row(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def upload(http: httpx.Client, name: str, rows: list[dict]) -> str:
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    answer = http.post("/v1/files", files={"file": (name, body)}, data={"purpose": "fine-tune"})
    assert answer.status_code == 200, answer.text
    return answer.json()["id"]


def tiny_job(http: httpx.Client) -> dict:
    training = upload(http, "colors.jsonl", [chat_row(q, a) for q, a in QA])
    job = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": training, "suffix": "ev",
                                                  "tuneforge": FAST}).json()
    deadline = time.monotonic() + 180
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
        job = http.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job["error"]
    return job


def eval_status(browser) -> str | None:
    """The Evaluate section's status, read in one script call (the badge is redrawn while the evaluation runs)."""
    return browser.execute_script("const b = document.getElementById('eval-status'); return b && b.dataset.status")


def overflowing(browser) -> list[str]:
    """The innermost elements that reach past the window's right edge (what makes the page scroll sideways)."""
    return browser.execute_script("""
        const out = [];
        for (const e of document.querySelectorAll("body *")) {
          const r = e.getBoundingClientRect();
          if (r.right > window.innerWidth + 1 && ![...e.children].some((c) =>
              c.getBoundingClientRect().right > window.innerWidth + 1)) {
            out.push(`${e.tagName.toLowerCase()}#${e.id}.${e.className} right=${Math.round(r.right)}`);
          }
        }
        return out.slice(0, 10);""")


def test_the_before_after_comparison_from_the_evaluate_section(server, browser, tmp_path):
    started = time.monotonic()
    http = httpx.Client(base_url=server, timeout=60)
    job = tiny_job(http)
    # the base's own greedy answer as a reference: a row it gets right and the fine-tune should get worse at
    own = http.post("/v1/chat/completions", json={"model": "tiny", "temperature": 0, "max_tokens": 12,
                                                  "messages": [{"role": "user", "content": STORY}]}).json()
    story = own["choices"][0]["message"]["content"]
    mixed = upload(http, "colors-and-story.jsonl", [chat_row(q, a) for q, a in QA] + [chat_row(STORY, story)])

    page = Page(browser, server, tmp_path / "screens")
    browser.get(f"{server}/#job={job['id']}")
    page.until(lambda: page.find("body").get_attribute("data-ready") == "true", "the page to load")
    page.until(lambda: page.find("#step-eval").is_displayed() and page.all("#eval-run"), "the Evaluate section")
    assert page.text("#h-eval").endswith("Evaluate")
    file_select = Select(page.find("#eval-file"))
    assert file_select.first_selected_option.get_attribute("value") == job["training_file"]
    assert "training data" in file_select.first_selected_option.text and "memorized" in page.text("#eval-note")
    assert page.find("#eval-kind-benchmark").is_enabled()  # ARC etc. are in the shared data
    page.shot("1-eval-form", "#step-eval")

    # keyboard: choose the mixed file and run
    file_select.select_by_value(mixed)
    page.until(lambda: not page.all("#eval-note"), "the training-data note to go for another file")
    assert Select(page.find("#eval-scoring")).first_selected_option.get_attribute("value") == "text"
    page.find("#eval-run").send_keys(Keys.ENTER)
    page.until(lambda: eval_status(browser) in ("queued", "running", "succeeded"), "the evaluation to start")
    page.until(lambda: eval_status(browser) == "succeeded", "the result", 90)
    assert "5 rows" in page.text("#eval-phase")

    chart = page.find("#eval-chart")
    assert chart.get_attribute("data-metrics") == "5"
    value = {(g.get_attribute("data-metric"), g.get_attribute("data-model")): float(g.get_attribute("data-value"))
             for g in page.all("#eval-chart g[data-metric]")}
    assert value[("exact_match", "tuned")] >= 60 > value[("exact_match", "base")]  # the 4 memorised rows of 5
    chart_text = chart.text
    assert "base" in chart_text and "fine-tuned" in chart_text and "exact_match" in chart_text
    row = page.find("#eval-metrics tr[data-metric=exact_match]")
    assert "▲" in row.text and "better" in row.text

    worse = page.all("#eval-worse tbody tr")
    assert len(worse) == 1 and STORY in worse[0].text and story.strip()[:20] in worse[0].text
    assert "colors-and-story.jsonl:5" in worse[0].text
    assert not page.find("#eval-better-table").is_displayed()  # collapsed
    page.find("#eval-better summary").click()
    better = page.all("#eval-better-table tbody tr")
    assert len(better) >= 3 and any("Blue." in r.text for r in better)
    assert "1 worse" in page.text("#eval-outcome")
    page.shot("2-eval-result", "#step-eval")
    page.shot("3-eval-tables", "#eval-worse-title")

    # a reload asks the server again: the same evaluation comes back
    browser.refresh()
    page.until(lambda: page.find("body").get_attribute("data-ready") == "true", "the reloaded page")
    page.until(lambda: eval_status(browser) == "succeeded", "the evaluation after reload")
    assert len(page.all("#eval-worse tbody tr")) == 1 and page.find("#eval-chart").get_attribute("data-metrics") == "5"

    # Chinese, then a phone-width window without sideways scrolling of the page
    page.find("#lang").click()
    assert page.text("#h-eval").endswith("评估") and "微调后" in page.text("#eval-metrics")
    page.shot("4-eval-chinese", "#step-eval")
    page.find("#lang").click()
    browser.set_window_size(390, 844)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 390, overflowing(browser)
    page.until(lambda: browser.execute_script("return document.getElementById('eval-chart').viewBox.baseVal.width")
               <= 390, "the chart drawn again for the phone's width")
    assert page.find("#eval-worse tbody tr td").get_attribute("data-label") == "Prompt"  # cards, headed cells
    page.shot("5-eval-phone", "#step-eval")
    page.shot("6-eval-phone-tables", "#eval-worse-title")
    browser.set_window_size(1280, 800)
    print(f"screenshots: {page.shots}; took {time.monotonic() - started:.0f} s")
