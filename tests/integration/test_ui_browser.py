"""The web UI in a real browser: Debian's chromium, headless, driven by Selenium through Debian's chromium-driver.

One walk through the page as a beginner takes it, against a real `tuneforge serve` app (656K TinyStories base,
chatml) with the UI mounted: the model's facts; a bad file refused naming its lines; a good file uploaded, rendered
with trained tokens marked and checked by the doctor; LoRA + SFT offered by default; the YAML the job will run; a
200-step job started, paused, the page reloaded (the same job, status and loss curve come back from the server),
resumed and finished; one message answered by the fine-tuned model and the base, and a thumbs up stored as
feedback; the page in Chinese and at phone width. A screenshot of each step goes to tmp_path/screens (look at them).
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

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(420)]

ROWS = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        for q, a in [("What color is the sky?", "Blue."), ("What color is grass?", "Green."),
                     ("What color is the sun?", "Yellow."), ("What color is snow?", "White.")]] * 4
FAST = ("train.max_steps=200\ntrain.learning_rate=0.005\ntrain.warmup_ratio=0\ntrain.save_steps=0\nmethod.r=4\n"
        "data.cutoff_len=64\ntrain.eval_steps=50")
QA_CSV = "question,answer\nWhat color is the sky?,Blue.\nWhat color is grass?,Green.\n"


def test_a_beginner_trains_and_chats_through_the_web_ui(server, browser, tmp_path, tiny_model_dir):
    page = Page(browser, server, tmp_path / "screens")
    started = time.monotonic()

    # 1. Model
    page.open()
    facts = page.text("#model-facts")
    assert "tiny" in facts and "656K parameters" in facts and "512 tokens" in facts and "yes (chatml)" in facts
    page.shot("1-model")
    # another model to fine-tune (as `tuneforge ui` allows): its facts read from its folder, then back to the base
    page.find("#model-input").send_keys(str(tiny_model_dir))
    page.find("#model-use").click()
    page.until(lambda: str(tiny_model_dir) in page.text("#model-facts"), "the other model's facts")
    assert "656K parameters" in page.text("#model-facts") and "its own copy" in page.text("#model-facts")
    page.find("#model-reset").click()
    page.until(lambda: "yes (chatml)" in page.text("#model-facts"), "the served model again")

    # 2. Data: a bad file names its lines; a good one is rendered and checked
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"messages": [{"role": "user", "content": "hi"}]})
                   + "\n{not json\n")
    page.upload(bad)
    page.until(lambda: "line 3" in page.text("#data-error"), "the refusal of bad.jsonl")
    refusal = page.text("#data-error")
    assert "bad.jsonl" in refusal and "line 2" in refusal and len(page.all("#data-error li")) == 2
    page.shot("2a-data-refused", "#step-data")

    # a CSV whose columns say nothing to the readers: refused, then read with the columns mapped by hand
    qa = tmp_path / "qa.csv"
    qa.write_text(QA_CSV)
    page.upload(qa)
    page.until(lambda: "qa.csv was not stored" in page.text("#data-error"), "the refusal of qa.csv")
    page.until(lambda: page.find("#mapping-edit").get_attribute("open") is not None, "the mapping form opened")
    assert "question, answer" in page.text("#mapping-now")
    Select(page.find("#map-format")).select_by_value("alpaca")
    page.find("#map-roles input[name=prompt]").send_keys("question")
    page.find("#map-roles input[name=response]").send_keys("answer")
    page.shot("2b-data-mapping", "#step-data")
    page.find("#map-apply").click()
    page.until(lambda: "qa.mapped.jsonl: 2 rows" in page.text("#data-format"), "the mapped file's preview")
    assert "Green." in page.text("#samples .sample:last-child .trained")
    assert "instruction (prompt) ← messages" not in page.text("#mapping-now")  # the new file reads as chat

    # a dataset registered in the server's dataset_info.json, imported as a file
    Select(page.find("#dataset-select")).select_by_value("sky_qa")
    page.find("#dataset-import").click()
    page.until(lambda: "sky_qa.jsonl: 2 rows" in page.text("#data-format"), "the imported dataset's preview")

    # prompts with a reference answer: reinforcement is offered, with a grader built from the reference column
    rl = tmp_path / "prompts.jsonl"
    rl.write_text("".join(json.dumps({"messages": r["messages"][:1], "answer": r["messages"][1]["content"]}) + "\n"
                          for r in ROWS[:4]))
    page.upload(rl)
    page.until(lambda: "prompts.jsonl: 4 rows" in page.text("#data-format"), "the prompts' preview")
    assert page.find("#stages input:checked").get_attribute("value") == "reinforcement"
    assert page.find("#grader").is_displayed() and Select(page.find("#grader-reference")).first_selected_option.text \
        == "answer"
    Select(page.find("#grader-compare")).select_by_value("ilike")
    page.until(lambda: "operation: ilike" in page.text("#plan-yaml"), "the grader in the YAML")
    assert "reference: '{{item.answer}}'" in page.text("#plan-yaml") and "type: grpo" in page.text("#plan-yaml")
    page.shot("2d-reinforcement-grader", "#step-method")
    good = tmp_path / "colors.jsonl"
    good.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    page.upload(good)
    page.until(lambda: "colors.jsonl" in page.text("#data-format") and len(page.all("#samples .sample")) == 3,
               "three rendered samples")
    assert page.find("#data-error").get_attribute("hidden") is not None
    assert "colors.jsonl: 16 rows, format openai" in page.text("#data-format")
    trained = [s.text for s in page.all("#samples .sample:first-child .trained")]
    assert trained and "Blue." in trained[0] and "What color" not in "".join(trained)
    assert "colors.jsonl:1" in page.text("#samples .sample .src")
    assert "repeat an earlier row" in page.text("#doctor")  # the rows repeat 4 times: the doctor says so
    assert "Read as openai: conversation ← messages" in page.text("#mapping-now")
    page.shot("2c-data-preview", "#step-data")

    # 3. Method and stage: SFT + LoRA by default, only what the table and this data allow
    assert not page.find("#grader").is_displayed()
    stages = [r.get_attribute("value") for r in page.all("#stages input[name=stage]")]
    assert stages == ["supervised"] and page.find("#stages input:checked").get_attribute("value") == "supervised"
    methods = Select(page.find("#method-select"))
    assert methods.first_selected_option.text == "lora" and "full" in [o.text for o in methods.options]
    assert "prompt" in [o.text for o in methods.options]  # prompt tuning runs with SFT (not with DPO: not offered)
    assert page.text("#method-about")
    page.shot("3-method", "#step-method")

    # 4. Settings: auto resolved, an advanced override, the exact YAML
    page.until(lambda: "max_steps" not in page.text("#plan-yaml") and "epochs: auto" in page.text("#plan-yaml"),
               "the plan")
    assert page.text("#auto-epochs").startswith("auto → ") and page.text("#auto-batch").startswith("auto → ")
    page.find("#advanced summary").click()
    page.find("#set-overrides").send_keys(FAST)
    Select(page.find("#set-validation")).select_by_visible_text("qa.mapped.jsonl")
    page.until(lambda: "max_steps: 200" in page.text("#plan-yaml"), "the override in the YAML")
    assert "type: lora" in page.text("#plan-yaml") and "type: sft" in page.text("#plan-yaml")
    page.shot("4-settings", "#step-settings")

    # 5. Train: live status and loss; pause, reload (the same state comes back), resume, finish
    page.find("#train").click()
    page.until(lambda: page.job_status() == "running" and page.points() >= 2, "the job running with a loss curve",
               timeout=60)
    job_id = page.text("#job-id")
    assert job_id.startswith("ftjob-") and f"job={job_id}" in browser.current_url
    page.find("#job-pause").click()
    page.until(lambda: page.job_status() == "paused", "the job paused", timeout=60)
    points = page.points()
    assert page.find("#job-resume").is_enabled() and not page.find("#job-pause").is_enabled()
    page.shot("5a-train-paused", "#step-train")
    browser.refresh()
    page.until(lambda: page.find("body").get_attribute("data-ready") == "true", "the reloaded page")
    page.until(lambda: page.job_status() == "paused" and page.points() == points, "the same job state after reload")
    assert page.text("#job-id") == job_id and "paused at step" in page.text("#job-log")
    assert Select(page.find("#job-select")).first_selected_option.get_attribute("value") == job_id
    assert len(page.all("#samples .sample")) == 3  # the job's data came back too
    page.shot("5b-train-reloaded")
    page.find("#job-resume").click()
    page.until(lambda: page.job_status() == "succeeded", "the job to succeed", timeout=180)
    assert page.points() == 200 and "ft:tiny:ui:" in page.text("#job-steps")
    assert int(page.find("#loss-chart").get_attribute("data-valid-points")) >= 4  # eval every 50 steps
    assert page.find("#loss-legend").is_displayed()
    page.shot("5c-train-done", "#step-train")

    # 6. Chat: both models answer the same prompt, streamed; a thumbs up is stored
    page.find("#chat-input").send_keys("What color is the sky?")
    page.find("#chat-send").click()
    page.until(lambda: all(a.get_attribute("data-done") == "true" for a in page.all(".answer")), "both answers")
    tuned, base = page.text("#answer-tuned .text"), page.text("#answer-base .text")
    assert tuned and base and tuned != base
    assert page.text("#answer-tuned .model-id").startswith("ft:tiny:ui:")
    page.find("#answer-tuned .vote .up").click()
    page.until(lambda: page.text("#answer-tuned .said") == "thanks, saved", "the feedback saved")
    completion = page.find("#answer-tuned .vote").get_attribute("data-completion-id")
    feedback = httpx.get(f"{server}/v1/feedback", params={"completion_id": completion}).json()["data"]
    assert [f["rating"] for f in feedback] == [1]
    page.find("#answer-tuned .vote .fix").click()
    box = page.find("#answer-tuned .correction textarea")
    box.clear()
    box.send_keys("Blue, like the sea.")
    page.find("#answer-tuned .correction button").click()
    page.until(lambda: page.text("#answer-tuned .said") == "correction saved", "the correction saved")
    feedback = httpx.get(f"{server}/v1/feedback", params={"completion_id": completion}).json()["data"]
    assert "Blue, like the sea." in [f["correction"] for f in feedback]
    page.shot("6-chat", "#step-chat")

    # 7. Chinese, and a phone-width screen
    page.find("#lang").click()
    assert page.text("#h-model") == "1模型" or page.text("#h-model").endswith("模型")
    assert "训练" in page.text("#h-train") and page.find("html").get_attribute("lang") == "zh-CN"
    page.shot("7a-chinese")
    page.find("#lang").click()
    browser.set_window_size(390, 844)
    wide = browser.execute_script("return document.documentElement.scrollWidth")
    assert wide <= 390, f"the page is {wide} px wide at phone width: {page.overflowing()}"  # nothing runs off-screen
    page.shot("7b-phone")
    page.shot("7c-phone-chat", "#step-chat")
    browser.set_window_size(1280, 800)
    print(f"screenshots: {page.shots}; walk took {time.monotonic() - started:.0f} s")
