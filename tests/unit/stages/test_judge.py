"""The `judge` reward: a fake OpenAI-compatible server, the cache, failures, config errors, a local model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tuneforge.stages import judge as judge_module
from tuneforge.stages.rewards import RewardSpec, build_reward, check_reward, reward_metrics
from tuneforge.utils.errors import ConfigError

P = [[{"role": "user", "content": "say something"}]]


def conv(*texts):
    return [[{"role": "assistant", "content": t}] for t in texts]


class FakeJudgeServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1: "8" for a kind completion, "2" for any other, "I
    cannot judge" when the question holds UNJUDGEABLE, HTTP 500 when it holds BOOM. Records every request body."""

    def __init__(self):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                question = body["messages"][-1]["content"]
                if "BOOM" in question:
                    self.send_error(500, "judge exploded")
                    return
                reply = "I cannot judge" if "UNJUDGEABLE" in question else "8" if "kind" in question else "2"
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
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def judged(self) -> list[dict]:
        """The scoring requests (the build-time probe left out)."""
        return [r for r in self.requests if r["max_tokens"] != 1]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FakeJudgeServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(judge_module, "_BACKOFF_S", 0.0)


def endpoint_judge(server, **args):
    return build_reward(RewardSpec(name="judge", endpoint=server.url, api_model="judge-1", **args))


def test_endpoint_scores_are_normalised_and_unparsable_answers_are_counted(server):
    judge = endpoint_judge(server)
    scores = judge(P * 3, conv("a kind reply", "a rude reply", "UNJUDGEABLE"), label=["hi", None, None])
    assert judge.__name__ == "judge"
    assert scores == [0.8, 0.2, None]
    assert judge.metrics() == {"judge/calls": 3, "judge/cache_hits": 0, "judge/unparsed": 1, "judge/failed": 0,
                               "judge/unparsed_share": pytest.approx(1 / 3)}
    assert reward_metrics([judge])["judge/unparsed"] == 1
    asked = server.judged()  # up to 4 requests run at once: the server sees them in any order
    assert all(r["path"] == "/v1/chat/completions" and r["model"] == "judge-1" and r["temperature"] == 0
               for r in asked)
    (kind,) = [r["messages"][0]["content"] for r in asked if "a kind reply" in r["messages"][0]["content"]]
    assert "say something" in kind and "Reference answer, if there is one: hi" in kind


def test_parse_score_takes_the_first_number_and_only_inside_the_scale():
    scale = (0.0, 10.0)
    assert judge_module.parse_score("Score: 7/10", scale) == 0.7
    assert judge_module.parse_score("<think>maybe 3</think> 9", scale) == 0.9
    assert judge_module.parse_score("11/10, then 5", scale) is None
    assert judge_module.parse_score("no idea", scale) is None
    assert judge_module.parse_score("3", (1.0, 5.0)) == 0.5


def test_identical_questions_are_asked_once_and_the_cache_file_outlives_the_judge(server, tmp_path):
    cache = tmp_path / "judge-cache.jsonl"
    judge = endpoint_judge(server, cache=str(cache))
    assert judge(P * 2, conv("kind", "kind")) == [0.8, 0.8]  # one question for the two identical completions
    assert len(server.judged()) == 1
    assert judge(P, conv("kind")) == [0.8]
    assert len(server.judged()) == 1
    assert judge.metrics()["judge/calls"] == 1 and judge.metrics()["judge/cache_hits"] == 2

    again = endpoint_judge(server, cache=str(cache))
    assert again(P * 2, conv("kind", "UNJUDGEABLE")) == [0.8, None]
    assert len(server.judged()) == 2  # only the new completion was asked
    assert again.metrics()["judge/cache_hits"] == 1 and again.metrics()["judge/unparsed"] == 1
    assert len(cache.read_text().splitlines()) == 2

    other_rubric = endpoint_judge(server, cache=str(cache), rubric="Is this kind? {completion} Score {low}-{high}:")
    other_rubric(P, conv("kind"))
    assert len(server.judged()) == 3  # a different rubric is a different question


def test_a_failing_endpoint_scores_none_and_counts_failed(server, monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test")
    judge = endpoint_judge(server, retries=1, api_key_env="JUDGE_TEST_KEY")
    assert judge(P * 2, conv("BOOM", "kind")) == [None, 0.8]
    assert len([r for r in server.judged() if "BOOM" in r["messages"][0]["content"]]) == 2  # tried, retried
    assert server.requests[-1]["auth"] == "Bearer sk-test"
    assert judge.metrics()["judge/failed"] == 1 and judge.metrics()["judge/unparsed"] == 0
    server.close()  # from now on the connection is refused
    assert judge(P, conv("rude")) == [None]
    assert judge.metrics()["judge/failed"] == 2
    assert judge(P, conv("BOOM")) == [None]  # failures are not cached: asked (and failing) again
    assert judge.metrics()["judge/failed"] == 3 and judge.metrics()["judge/calls"] == 4


def test_a_server_that_is_down_fails_at_build_with_the_fix(server):
    url = server.url
    server.close()
    with pytest.raises(ConfigError, match="did not answer") as err:
        build_reward(RewardSpec(name="judge", endpoint=url, api_model="m", retries=0))
    assert "start the server or fix endpoint" in str(err.value)
    check_reward(RewardSpec(name="judge", endpoint=url, api_model="m"))  # checking makes no network call


@pytest.mark.parametrize(("args", "message"), [
    ({}, "exactly one of `model:`.*got neither"),
    ({"model": "tinystories-656k", "endpoint": "http://h/v1"}, "got both"),
    ({"endpoint": "http://h/v1"}, "needs `api_model:`"),
    ({"endpoint": "h:8000", "api_model": "m"}, "not an http"),
    ({"endpoint": "http://h/v1", "api_model": "m", "api_key_env": "TUNEFORGE_NO_SUCH_KEY"}, "is not set"),
    ({"endpoint": "http://h/v1", "api_model": "m", "rubric": "{prompt} only"}, "no \\{completion\\} placeholder"),
    ({"endpoint": "http://h/v1", "api_model": "m", "rubric": "{completion} {answer}"},
     "unknown placeholder \\{answer\\}"),
    ({"endpoint": "http://h/v1", "api_model": "m", "rubric": "{completion} {"}, "not a valid template"),
    ({"endpoint": "http://h/v1", "api_model": "m", "scale": [10, 0]}, "scale must be"),
    ({"endpoint": "http://h/v1", "api_model": "m", "scale": 10}, "scale must be"),
    ({"endpoint": "http://h/v1", "api_model": "m", "max_new_tokens": 0}, "max_new_tokens must be"),
    ({"endpoint": "http://h/v1", "api_model": "m", "rubric_fil": "r.txt"}, "did you mean 'rubric_file'"),
    ({"endpoint": "http://h/v1", "api_model": "m", "batch_size": 4}, "only apply to a local"),
    ({"model": "tinystories-656k", "template": "chatmlx"}, "unknown chat template"),
])
def test_config_errors_are_caught_before_anything_loads(args, message):
    with pytest.raises(ConfigError, match=message):
        check_reward(RewardSpec(name="judge", **args))


def test_rubric_file_must_exist_and_is_read(server, tmp_path):
    with pytest.raises(ConfigError, match="rubric_file .* does not exist"):
        check_reward(RewardSpec(name="judge", endpoint=server.url, api_model="m", rubric_file=str(tmp_path / "no")))
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Judge {{strictly}}: {completion}\nScore {low}..{high}:")
    judge = endpoint_judge(server, rubric_file=str(rubric), scale=[1, 5])
    assert judge(P, conv("rude")) == [0.25]
    assert server.judged()[0]["messages"][0]["content"] == "Judge {strictly}: rude\nScore 1..5:"


@pytest.mark.usefixtures("one_thread")
def test_a_local_model_judges_through_its_chat_template(tiny_model_dir):
    judge = build_reward(RewardSpec(name="judge", model=str(tiny_model_dir), template="alpaca", max_new_tokens=4,
                                    batch_size=3, device="cpu"))
    assert not judge.backend.model.training
    completions = conv("Once upon a time", "a kind dog", "The end. The end. The end.")
    scores = judge(P * 3, completions, label=["1", None, "2"])
    assert len(scores) == 3 and all(s is None or 0.0 <= s <= 1.0 for s in scores)
    metrics = judge.metrics()
    assert metrics["judge/calls"] == 3 and metrics["judge/failed"] == 0
    assert metrics["judge/unparsed"] == scores.count(None)
    assert judge(P * 3, completions, label=["1", None, "2"]) == scores  # greedy, and now from the cache
    assert judge.metrics()["judge/cache_hits"] == 3

    with pytest.raises(ConfigError, match="has no chat template"):  # TinyStories has none of its own
        build_reward(RewardSpec(name="judge", model=str(tiny_model_dir)))

    questions = ["Rate: a", "Rate this much longer answer, please: the cat sat on the mat", "Rate: b c"]
    batched = judge.backend.ask(questions)
    assert batched == [judge.backend.ask([q])[0] for q in questions]  # left padding: batching changes nothing
    assert all(isinstance(r, str) for r in batched)
