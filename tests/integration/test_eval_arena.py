"""`tuneforge eval arena` end to end on the 656K TinyStories model, and with OpenAI-compatible endpoints.

Three LoRA adapters trained with plain PEFT to answer "Blue." for 3, 4 and 8 steps answer at very different
lengths (3 steps: long rambling, 4: shorter, 8: "Blue."), so the rule judge `rule:longer` has a clear order that
the ratings must reproduce. The 4-step adapter is given as a finished run folder recorded in the registry, so the
arena must be linked to that run. A fake endpoint (two models and a judge that always picks answer 1) checks the
endpoint paths, the judge's self-agreement and the reply cache; a scripted person checks the human judge's
quit-and-resume.
"""

from __future__ import annotations

import json
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import combinations

import pytest
from typer.testing import CliRunner

from train_helpers import STORY_QA, train_sky_adapter
from tuneforge.cli import app
from tuneforge.eval.arena import ArenaSettings, GenerationSettings, JudgeSpec, run_arena
from tuneforge.stages import judge as judge_module
from tuneforge.utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [q for q, _ in STORY_QA] + ["Once upon a time", "Write a story about a cat.", "Hello", "What is a tree?"]


def write_prompts(path, prompts=PROMPTS):
    rows = [{"prompt": p} if i % 2 else {"messages": [{"role": "user", "content": p}], "id": f"q{i}"}
            for i, p in enumerate(prompts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def contenders(tiny_model_dir, tmp_path_factory):
    """{"long": adapter folder, "mid": a finished run folder recorded in the registry, "short": adapter folder}
    and the mid run's registry id."""
    from tuneforge.registry.api import RunRecorder

    root = tmp_path_factory.mktemp("arena-models")
    folders = {}
    for name, steps in (("long", 3), ("mid", 4), ("short", 8)):
        folders[name] = root / name / "adapter"
        train_sky_adapter(tiny_model_dir, folders[name], steps=steps)
    run_dir = root / "mid-run"
    shutil.copytree(folders["mid"], run_dir / "adapter")
    recorder = RunRecorder.start(kind="train", base_model=str(tiny_model_dir), output_dir=str(run_dir),
                                 stage="sft", method="lora")
    recorder.finish("succeeded")
    assert recorder.run_id
    (run_dir / "run.json").write_text(json.dumps({"status": "succeeded", "base_model": str(tiny_model_dir),
                                                  "final_dir": str(run_dir / "adapter"),
                                                  "run_id": recorder.run_id}))
    folders["mid"] = run_dir
    return folders, recorder.run_id


def rule_order(answers: list[dict], names: list[str]) -> list[str]:
    """The order `rule:longer` itself gives, computed here from the answers: points from every pairwise length
    comparison (within 5 % a tie)."""
    points = dict.fromkeys(names, 0.0)
    for row in answers:
        for a, b in combinations(names, 2):
            la, lb = len(row["answers"][a].strip()), len(row["answers"][b].strip())
            if abs(la - lb) <= 0.05 * max(la, lb):
                points[a] += 0.5
                points[b] += 0.5
            else:
                points[a if la > lb else b] += 1
    assert len(set(points.values())) == len(names), f"the rule does not order these models strictly: {points}"
    return sorted(names, key=lambda n: -points[n])


def arena(out, prompts, *models, extra=()):
    args = ["eval", "arena", *[a for m in models for a in ("--model", m)], "--prompts", str(prompts),
            "--judge", "rule:longer", "--max-new-tokens", "24", "--bootstrap", "200", "--device", "cpu",
            "--no-progress", "-o", str(out), *extra]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"{res.output}\n{res.exception!r}"
    return json.loads((out / "arena.json").read_text(encoding="utf-8"))


def test_rule_judge_orders_models_and_the_cache_prevents_regeneration(tmp_path, contenders, tiny_model_dir,
                                                                      monkeypatch):
    from tuneforge.registry import queries
    from tuneforge.registry.store import open_store

    folders, mid_run = contenders
    prompts, out = write_prompts(tmp_path / "prompts.jsonl"), tmp_path / "arena"
    models = [f"long={folders['long']}", f"mid={folders['mid']}", str(folders["short"])]  # "short" named by path

    report = arena(out, prompts, *models)
    names = ["long", "mid", "short"]
    assert [m["name"] for m in report["models"]] == names
    assert [m["generated"] for m in report["models"]] == [len(PROMPTS)] * 3
    expected = rule_order(report["answers"], names)
    assert expected[-1] == "short"  # the 8-step adapter answers "Blue."
    assert [r["name"] for r in report["leaderboard"]] == expected
    assert [r["name"] for r in sorted(report["leaderboard"], key=lambda r: -r["elo"])] == expected
    assert report["judge"]["verdicts"] == len(PROMPTS) * 3 * 2  # 3 pairs, both orders
    assert report["agreement"]["agreement"] == 1.0
    for row in report["leaderboard"]:
        assert row["bt_ci"][0] <= row["bt"] <= row["bt_ci"][1]
    for name in ("arena.md", "arena.html", "arena.png", "arena.json"):
        assert (out / name).stat().st_size > 0
    page = (out / "arena.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in page and "<script" not in page and "src='http" not in page
    assert "Leaderboard" in (out / "arena.md").read_text(encoding="utf-8")
    assert (out / "arena.png").read_bytes()[:4] == b"\x89PNG"

    store = open_store()
    run = queries.get_run(store, report["run_id"])
    assert run.kind == "eval" and "arena" in run.tags and run.parent_run_id == mid_run
    assert {e["name"] for e in queries.evals(store, run.id)} == {f"arena/{n}" for n in names}
    linked = [e for e in queries.evals(store, mid_run) if e["name"] == f"arena {run.id}"]
    assert linked and linked[0]["metrics"]["rank"] == expected.index("mid") + 1

    # a fourth model: only its answers are generated (the TinyStories base has no chat template: --template)
    report = arena(out, prompts, *models, f"base={tiny_model_dir}", extra=["--template", "chatml"])
    assert {m["name"]: m["generated"] for m in report["models"]} == {"long": 0, "mid": 0, "short": 0,
                                                                     "base": len(PROMPTS)}

    # the same arena again loads no model at all
    from tuneforge.infer.engine import Engine

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded although all its answers are cached")

    monkeypatch.setattr(Engine, "load", classmethod(no_loading))
    report = arena(out, prompts, *models, f"base={tiny_model_dir}", extra=["--template", "chatml"])
    assert [m["generated"] for m in report["models"]] == [0, 0, 0, 0]
    assert [m["cached"] for m in report["models"]] == [len(PROMPTS)] * 4


def test_mistakes_fail_before_any_answer_is_generated(tmp_path, tiny_model_dir):
    prompts = write_prompts(tmp_path / "p.jsonl")

    def settings(models, **judge):
        return ArenaSettings(models=models, prompts=str(prompts), judge=JudgeSpec(**judge), out=str(tmp_path / "o"))

    tiny = str(tiny_model_dir)
    with pytest.raises(ConfigError, match="at least two models"):
        run_arena(settings([tiny], judge="rule:longer"))
    with pytest.raises(ConfigError, match="two models are named"):
        run_arena(settings([tiny, tiny], judge="rule:longer"))
    with pytest.raises(ConfigError, match="exactly one judge"):
        run_arena(settings([f"a={tiny}", f"b={tiny}"]))
    with pytest.raises(ConfigError, match="unknown judge rule"):
        run_arena(settings([f"a={tiny}", f"b={tiny}"], judge="rule:best"))
    with pytest.raises(ConfigError, match="model a has no chat template"):
        run_arena(settings([f"a={tiny}", f"b={tiny}"], judge="rule:longer"))
    assert not (tmp_path / "o" / "answers").exists()


# --- endpoints and the human judge -------------------------------------------------------------------------------


class FakeServer:
    """/v1/chat/completions: model "terse" answers "Yes.", "verbose" repeats the prompt three times, "judge-1"
    always answers "1" (a judge that follows the position). Counts the requests per model."""

    def __init__(self):
        self.requests: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests[body["model"]] = server.requests.get(body["model"], 0) + 1
                last = body["messages"][-1]["content"]
                reply = {"terse": "Yes.", "verbose": f"Yes: {last} " * 3, "judge-1": "1"}[body["model"]]
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(judge_module, "_BACKOFF_S", 0.0)
    s = FakeServer()
    yield s
    s.close()


def endpoint_models(server):
    return [f"endpoint:{server.url}#terse", f"wordy=endpoint:{server.url}#verbose"]


def test_endpoint_models_and_a_position_biased_endpoint_judge(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:5])
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Q: {prompt}\nReference: {reference}\n1) {answer_1}\n2) {answer_2}\nSay 1, 2 or tie.")
    settings = ArenaSettings(models=endpoint_models(server), prompts=str(prompts), out=str(tmp_path / "o"),
                             judge=JudgeSpec(endpoint=server.url, api_model="judge-1", rubric=str(rubric)),
                             generation=GenerationSettings(max_new_tokens=32), bootstrap=100, progress=False)
    result = run_arena(settings)
    report = result.report
    assert result.generated == {"terse": 5, "wordy": 5}
    assert report["answers"][0]["answers"] == {"terse": "Yes.", "wordy": f"Yes: {PROMPTS[0]} " * 3}
    assert report["judge"]["verdicts"] == 10 and report["judge"]["asked"] == 10
    # answer 1 always wins: every pair flipped, no agreement, both models equal
    assert report["agreement"]["agreement"] == 0.0 and report["agreement"]["flipped"] == 5
    assert report["agreement"]["first_position_share"] == 1.0
    assert len(report["examples"]["flips"]) == 5 and report["examples"]["flips"][0]["strict"]
    assert [r["bt"] for r in report["leaderboard"]] == pytest.approx([1000.0, 1000.0])

    asked = dict(server.requests)
    result = run_arena(settings)  # everything cached: only the judge's probe goes out
    assert result.generated == {"terse": 0, "wordy": 0} and result.report["judge"]["cached"] == 10
    assert server.requests == {**asked, "judge-1": asked["judge-1"] + 1}


def test_human_judge_quits_and_resumes(tmp_path, server):
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:4])
    settings = ArenaSettings(models=endpoint_models(server), prompts=str(prompts), out=str(tmp_path / "o"),
                             judge=JudgeSpec(judge="human"), bootstrap=50, progress=False)
    typed = iter(["x", "1", "t", "q"])  # a typo is asked again; q stops after two verdicts
    result = run_arena(settings, ask=lambda _: next(typed))
    assert result.paused and result.report is None
    assert len((tmp_path / "o" / "human_verdicts.jsonl").read_text().splitlines()) == 2

    typed = iter(["s", "2"])
    report = run_arena(settings, ask=lambda _: next(typed)).report
    assert not report["both_orders"] and report["judge"]["comparisons"] == 4  # one random order per pair
    assert report["judge"]["cached"] == 2 and report["judge"]["asked"] == 2 and report["judge"]["skipped"] == 1
    assert report["judge"]["verdicts"] == 3 and report["agreement"]["pairs_both_orders"] == 0


def test_a_local_model_judges_with_the_rubric_and_its_replies_are_cached(tmp_path, server, tiny_model_dir):
    """TinyStories is no judge: its replies rarely hold a verdict. They must be counted, not guessed, and cached."""
    prompts = write_prompts(tmp_path / "p.jsonl", PROMPTS[:3])
    settings = ArenaSettings(models=endpoint_models(server), prompts=str(prompts), out=str(tmp_path / "o"),
                             judge=JudgeSpec(judge=str(tiny_model_dir), template="chatml", max_new_tokens=4,
                                             device="cpu"), bootstrap=20, progress=False)
    judge = run_arena(settings).report["judge"]
    assert judge["asked"] == 6 and judge["verdicts"] + judge["unparsed"] == 6 and judge["failed"] == 0
    replies = (tmp_path / "o" / "judge_cache.jsonl").read_text().splitlines()
    assert len(replies) == 6
    again = run_arena(settings).report["judge"]
    assert again["asked"] == 0 and again["cached"] == 6 and again["verdicts"] == judge["verdicts"]
