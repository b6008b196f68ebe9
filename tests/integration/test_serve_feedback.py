"""The loop from serving back to data: a server on a free loopback port logs chat completions
(`log_requests=True`, a throwaway registry), clients rate and correct them over HTTP (POST/GET /v1/feedback), and
`tuneforge data from-feedback` turns that into SFT / DPO / KTO files that load as datasets for the next job.

Until routes_chat calls `log_chat_completion` itself, the logging step here calls it directly with what the route
would pass; `test_chat_completions_are_logged_by_the_route` checks the wiring and is an expected failure until then.
"""

from __future__ import annotations

import re
import threading
import time
from types import SimpleNamespace

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from typer.testing import CliRunner

from tuneforge.cli import app as cli
from tuneforge.data.catalog import load_dataset
from tuneforge.registry.testing import temp_registry_url
from tuneforge.serve import request_log
from tuneforge.serve.app import create_app
from tuneforge.serve.request_log import log_chat_completion
from tuneforge.serve.settings import ServeSettings

pytestmark = pytest.mark.usefixtures("one_thread")

ASK = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What color is the sky?"}]


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    with temp_registry_url("sqlite", tmp_path_factory.mktemp("registry")) as url:
        yield url


@pytest.fixture(scope="module")
def server(tiny_model_dir, registry):
    import uvicorn

    settings = ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None,
                             device="cpu", jobs=False, log_requests=True, registry_url=registry)
    app = create_app(settings)
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer any-key"}, timeout=60) as http:
        yield SimpleNamespace(url=url, app=app, state=app.state.tuneforge, http=http,
                              openai=OpenAI(base_url=f"{url}/v1", api_key="any-key", max_retries=0, timeout=60))
    srv.should_exit = True
    thread.join(timeout=10)


def _answered(server, n: int = 1, **kw):
    """A real chat completion, then logged as routes_chat will log it: (completion id, answers)."""
    body = {"model": "tiny", "messages": ASK, "temperature": 0.9, "seed": 7, "max_tokens": 8, "n": n, **kw}
    reply = server.openai.chat.completions.create(**body)
    answers = [c.message.content for c in reply.choices]
    log_chat_completion(server.state, "default", {**body, "user": "someone"}, reply.id, answers, reply.model)
    return reply.id, answers


def _feedback(server, **body) -> httpx.Response:
    return server.http.post("/v1/feedback", json=body)


def test_feedback_is_recorded_for_a_logged_completion_and_listed(server):
    cid, answers = _answered(server, n=2)
    r = _feedback(server, completion_id=cid, rating=-1, correction="Blue.")  # no flush first: the route waits
    assert r.status_code == 200, r.text
    got = r.json()
    assert re.fullmatch(r"feedback-\d+", got["id"]) and got["object"] == "feedback"
    assert (got["completion_id"], got["rating"], got["choice_index"]) == (cid, -1, 0)
    assert abs(got["created_at"] - time.time()) < 60
    assert _feedback(server, completion_id=cid, rating=1, choice_index=1).status_code == 200
    listed = server.http.get("/v1/feedback", params={"completion_id": cid}).json()
    assert [(f["rating"], f["correction"], f["choice_index"]) for f in listed["data"]] == [(-1, "Blue.", 0),
                                                                                          (1, None, 1)]
    from tuneforge.registry.feedback import completions_with_feedback
    from tuneforge.registry.store import open_store

    (done,) = [c for c in completions_with_feedback(open_store(server.state.settings.registry_url)) if c.id == cid]
    assert done.answers == answers and done.model == "tiny"
    assert done.request["messages"] == ASK and done.request["seed"] == 7 and done.request["n"] == 2
    assert "user" not in done.request and "model" not in done.request  # only the kept fields


def test_feedback_errors_in_openai_shape(server):
    cid, _ = _answered(server)
    log_chat_completion(server.state, "another-project", {"messages": ASK}, "chatcmpl-theirs", ["Red."], "tiny")
    for body, status, param in [({"completion_id": "chatcmpl-unknown", "rating": 1}, 404, "completion_id"),
                                ({"completion_id": "chatcmpl-theirs", "rating": 1}, 404, "completion_id"),
                                ({"completion_id": cid}, 400, "rating"),
                                ({"completion_id": cid, "correction": "  "}, 400, "rating"),
                                ({"completion_id": cid, "rating": 2}, 400, "rating"),
                                ({"completion_id": cid, "rating": 1, "choice_index": 1}, 400, "choice_index")]:
        r = _feedback(server, **body)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"], body
    assert server.http.get("/v1/feedback", params={"completion_id": "chatcmpl-theirs"}).status_code == 404


def test_without_request_logging_unknown_completions_are_a_400_saying_so(server, tiny_model_dir, registry):
    settings = ServeSettings(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None,
                             device="cpu", jobs=False, log_requests=False, registry_url=registry)
    off = create_app(settings, pool=server.state.pool)
    log_chat_completion(off.state.tuneforge, "default", {"messages": ASK}, "chatcmpl-not-logged", ["x"], "tiny")
    request_log.flush()
    with TestClient(off) as client:
        r = client.post("/v1/feedback", json={"completion_id": "chatcmpl-not-logged", "rating": 1})
        assert r.status_code == 400 and "--log-requests" in r.json()["error"]["message"]
        cid, _ = _answered(server)  # logged by the other server into the same registry: still rateable here
        request_log.flush()
        assert client.post("/v1/feedback", json={"completion_id": cid, "rating": 1}).status_code == 200


def test_chat_completions_are_logged_by_the_route(server):
    plain = server.openai.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, temperature=0)
    stream = server.openai.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, temperature=0,
                                                   stream=True)
    streamed_id = [chunk.id for chunk in stream][-1]
    for cid in (plain.id, streamed_id):
        assert _feedback(server, completion_id=cid, rating=1).status_code == 200, cid


def test_export_writes_loadable_sft_dpo_kto_files_and_never_overwrites(server, registry, tmp_path):
    cid, answers = _answered(server, n=2, temperature=1.5, seed=3)
    assert answers[0] != answers[1]  # the pair below needs two different answers
    _answered(server)  # logged, never rated: counted as without usable feedback
    for body in ({"rating": 1, "choice_index": 0}, {"rating": -1, "choice_index": 1},
                 {"rating": -1, "correction": "Blue.", "choice_index": 1}):
        assert _feedback(server, completion_id=cid, **body).status_code == 200
    out = tmp_path / "feedback.jsonl"
    args = ["data", "from-feedback", "--model", "tiny", "--out", str(out), "--kind", "all", "--registry", registry]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    said = " ".join(r.output.split())
    assert "sft: " in said and "dpo: " in said and "kto: " in said and "had no usable feedback" in said
    files = {k: tmp_path / f"feedback.{k}.jsonl" for k in ("sft", "dpo", "kto")}
    loaded = {k: load_dataset({"path": str(p)}) for k, p in files.items()}
    assert {k: v.format for k, v in loaded.items()} == {"sft": "openai", "dpo": "openai+pairwise",
                                                        "kto": "openai+kto"}
    mine = {k: [rec for rec in v.records if rec.extra["source"]["completion_id"] == cid] for k, v in loaded.items()}
    assert sorted(rec.messages[-1]["content"] for rec in mine["sft"]) == sorted([answers[0], "Blue."])
    assert sorted((p.chosen[0]["content"], p.rejected[0]["content"]) for p in mine["dpo"]) == sorted(
        [("Blue.", answers[1]), (answers[0], answers[1])])
    assert sorted((rec.messages[-1]["content"], rec.label) for rec in mine["kto"]) == sorted(
        [(answers[0], True), (answers[1], False), ("Blue.", True)])
    assert all(rec.messages[:2] == ASK for v in mine.values() for rec in v if rec.messages)
    again = CliRunner().invoke(cli, args)
    assert again.exit_code != 0 and "refusing to overwrite" in str(again.exception)
