"""The web UI's Runs section (runs.js) in a real browser (Debian's headless chromium through Selenium), against a
real `tuneforge serve` app with the UI mounted (656K TinyStories base, chatml): a job trained through the HTTP API
shows up as a run with its status and loss; opened, it shows its config, loss curve, lineage and which actions
apply; Export merges it and passes the parity check (the export appears as its child run); "New run from this
config" fills the data step and the settings with the run's file and keys, and the job started from there joins the
table when it ends. Then Chinese and a phone-width window.
Screenshots go to tmp_path/screens (run with -s to see the folder; look at them).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytest.importorskip("selenium.webdriver", reason="selenium is in the test extra")
from selenium.webdriver.support.ui import Select  # noqa: E402
import ui_browser_kit  # noqa: E402
from ui_browser_kit import Page  # noqa: E402

server, browser = ui_browser_kit.server, ui_browser_kit.browser  # module-scoped fixtures, shared with other UI tests

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(300)]

ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("What color is the sky?", "Blue."), ("What color is grass?", "Green."),
                     ("What color is the sun?", "Yellow."), ("What color is snow?", "White.")]] * 4
KEYS = {"train.max_steps": 20, "train.learning_rate": 0.005, "train.warmup_ratio": 0, "method.r": 4,
        "data.cutoff_len": 64}


def trained_job(server) -> tuple[str, str]:
    """(file id, job id) of a 20-step LoRA job created and finished through the HTTP API."""
    body = "".join(json.dumps(r) + "\n" for r in ROWS).encode()
    saved = httpx.post(server + "/v1/files", files={"file": ("colors.jsonl", body)}, data={"purpose": "fine-tune"})
    assert saved.status_code == 200, saved.text
    file_id = saved.json()["id"]
    job = httpx.post(server + "/v1/fine_tuning/jobs", timeout=60, json={
        "model": "tiny", "training_file": file_id, "suffix": "colors", "tuneforge": KEYS,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}}})
    assert job.status_code == 200, job.text
    job_id = job.json()["id"]
    deadline = time.monotonic() + 120
    while (status := httpx.get(f"{server}/v1/fine_tuning/jobs/{job_id}").json()["status"]) not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the job did not finish in 120 s"
        time.sleep(0.3)
    assert status == "succeeded"
    return file_id, job_id


def no_sideways_scroll(page: Page) -> bool:
    return page.driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth")


def too_wide(page: Page) -> list[str]:
    """The elements reaching past the window's right edge (outside boxes that scroll on their own)."""
    return page.driver.execute_script("""
        const w = document.documentElement.clientWidth;
        return [...document.querySelectorAll("body *")].filter((e) => e.getBoundingClientRect().right > w + 1
          && !e.parentElement.closest(".runs-scroll, pre") && e.getClientRects().length)
          .map((e) => e.tagName + (e.id ? "#" + e.id : "") + "." + e.className + " " + e.getBoundingClientRect().right)
          .slice(0, 12).concat([document.documentElement.scrollWidth, w]);""")


def test_runs_are_listed_opened_exported_and_started_again(server, browser, tmp_path):
    page = Page(browser, server, tmp_path / "screens")
    file_id, job_id = trained_job(server)
    started = time.monotonic()
    page.open()

    # The list: the job's run with its status, final loss, steps and the job's name
    row = '#runs-table tbody tr[data-run]'
    page.until(lambda: len(page.all(row)) == 1, "the job's run in the Runs table")
    assert page.text("#h-runs") == "8Runs" or page.text("#h-runs").endswith("Runs")

    def read_row() -> dict:  # one poll reads the row whole: a job event may re-render the table between reads
        first = page.find(row)
        return {"id": first.get_attribute("data-run"), "text": first.text,
                "status": first.find_element("css selector", ".badge").get_attribute("data-status"),
                "open": first.find_element("css selector", ".run-open").get_attribute("aria-label"),
                "loss": first.find_element("css selector", 'td[data-metric="loss"]').text}

    first = page.until(read_row, "the run's row read whole")
    first_id = first["id"]
    assert first["status"] == "succeeded"
    assert "colors" in first["text"] and "SFT · lora" in first["text"] and " 20" in first["text"]
    assert first["open"] == "Open run colors"
    assert first["loss"] != "–" and 0 < float(first["loss"]) < 20
    page.shot("8a-runs-list", "#step-runs")

    # Open it: config, loss curve, lineage, the actions and why one does not apply
    page.find(row + " .run-open").click()
    page.until(lambda: not page.find("#run-detail").get_attribute("hidden"), "the run's detail")
    assert job_id in page.text("#run-detail .facts") and "colors.jsonl" in page.text("#run-detail .facts")
    assert int(page.find("#run-chart").get_attribute("data-points")) >= 2
    assert page.find("#run-lineage li").get_attribute("data-run") == page.find(row).get_attribute("data-run")
    assert "loss" in page.text("#run-metrics")
    page.find("#run-config summary").click()
    assert "max_steps: 20" in page.text("#run-config pre") and "<storage>/jobs/" in page.text("#run-config pre")
    assert page.find("#run-resume").get_attribute("disabled") and "finished" in page.text("#run-why")
    assert not page.find("#run-export").get_attribute("disabled") and not page.find("#run-new").get_attribute(
        "disabled")
    page.shot("8b-run-open", "#run-detail")

    # Export: merged and checked; the export run appears as its child
    Select(page.find("#run-export-dtype")).select_by_value("float32")
    page.find("#run-export").click()
    page.until(lambda: page.all("#run-export-result"), "the export's result", timeout=60)
    result = page.text("#run-export-result")
    assert "exports/merged (float32)" in result and "Parity check passed" in result
    assert "ok" in page.find("#run-export-result").get_attribute("class")
    page.until(lambda: len(page.all(row)) == 2, "the export run in the table")
    assert "→ 1" in page.text(f'#runs-table tr[data-run="{page.find("#run-lineage li").get_attribute("data-run")}"]')
    assert len(page.all("#run-lineage li")) == 2  # this run and its export
    page.shot("8c-run-exported", "#run-detail")
    page.find("#run-export-result button").click()
    page.until(lambda: "export" in page.text("#run-title"), "the export run opened")
    assert "passed" in page.text("#run-parity") and page.find("#run-export").get_attribute("disabled")
    page.find("#run-lineage button.link").click()  # back to the training run through the lineage
    page.until(lambda: "training" in page.text("#run-title"), "the training run opened again")

    # A new run from its config: the data step has its file, the settings its keys, the plan its YAML
    page.find("#run-new").click()
    page.until(lambda: "train.max_steps=20" in page.find("#set-overrides").get_attribute("value"),
               "the run's keys in the settings")
    assert Select(page.find("#file-select")).first_selected_option.get_attribute("value") == file_id
    assert not page.find("#step-settings").get_attribute("hidden")
    assert page.find("#set-epochs").get_attribute("value") == "2"
    assert page.find("#set-suffix").get_attribute("value") == "colors"
    page.until(lambda: "max_steps: 20" in page.text("#plan-yaml") and "r: 4" in page.text("#plan-yaml"),
               "the plan with the run's keys")
    assert not page.find("#train").get_attribute("disabled")
    page.shot("8d-new-run-settings", "#step-settings")
    page.find("#train").click()  # the new job: when it ends, its run joins the table without a refresh
    page.until(lambda: page.job_status() == "succeeded", "the new job to finish", timeout=90)
    page.until(lambda: len(page.all(row)) == 3, "the new job's run in the Runs table")

    newest = page.until(lambda: (r := read_row())["status"] == "succeeded" and r, "the newest run's row, succeeded")
    assert " 20" in newest["text"] and newest["id"] != first_id

    # Chinese, then a phone-width window: no sideways scrolling of the page (the table scrolls in its box)
    page.find("#lang").click()
    page.until(lambda: "运行记录" in page.text("#h-runs"), "the Runs section in Chinese")
    assert "验证损失" in page.text("#runs-table") and page.text("#run-new") == "用此配置新建运行"
    page.shot("8e-runs-zh", "#step-runs")
    page.find("#lang").click()
    assert no_sideways_scroll(page)
    browser.set_window_size(390, 844)
    try:
        time.sleep(0.3)
        assert no_sideways_scroll(page), too_wide(page)
        page.shot("8f-runs-phone", "#step-runs")
        page.shot("8g-run-phone", "#run-detail")
    finally:
        browser.set_window_size(1280, 800)
    assert time.monotonic() - started < 60
