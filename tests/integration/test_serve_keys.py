"""API keys, projects and body limits of `tuneforge serve`, driven by the official openai client and httpx.

Two servers on free loopback ports share one loaded 656K TinyStories base and one temporary registry: `strict`
(require_keys, as when bound beyond loopback) and `open` (the loopback default, keys optional; max_request_mb=1 and
max_upload_mb=2 for the body limits). A test-only route `/test/whoami` answers the Caller that `require_api_key`
gives, so the project a request acts for is checked directly.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import httpx
import openai
import pytest
from fastapi import Depends
from openai import OpenAI

from tuneforge.registry import keys
from tuneforge.registry.store import close_store, open_store
from tuneforge.serve.app import create_app
from tuneforge.serve.auth import DEFAULT_PROJECT, Caller, require_api_key
from tuneforge.serve.pool import ModelPool
from tuneforge.serve.run import check_bind, keys_required, serve
from tuneforge.serve.settings import ServeSettings
from tuneforge.utils.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

HI = [{"role": "user", "content": "Hi"}]


@contextmanager
def _running(app):
    import uvicorn

    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def _with_whoami(app):
    async def whoami(caller: Caller = Depends(require_api_key)) -> dict:
        return {"project": caller.project, "key_id": caller.key_id}

    app.add_api_route("/test/whoami", whoami, methods=["GET"])
    return app


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('keys') / 'r.db'}"
    yield url
    close_store(url)


@pytest.fixture(scope="module")
def servers(tiny_model_dir, registry):
    common = dict(model=str(tiny_model_dir), name="tiny", template="chatml", runs_dir=None, device="cpu",
                  registry_url=registry, jobs=False)  # the jobs API is tested elsewhere: no scheduler here
    strict = ServeSettings(**common, require_keys=True)
    loose = ServeSettings(**common, max_request_mb=1, max_upload_mb=2)
    pool = ModelPool(strict)
    with _running(_with_whoami(create_app(strict, pool=pool))) as strict_url, \
            _running(_with_whoami(create_app(loose, pool=pool))) as open_url:
        yield SimpleNamespace(strict=strict_url, open=open_url)


@pytest.fixture(scope="module")
def key(registry):
    row, secret = keys.create_key(open_store(registry), "team-a", "tests")
    return SimpleNamespace(id=row.id, secret=secret)


def _client(url: str, api_key: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0, timeout=60)


def _whoami(url: str, authorization: str | None = None) -> httpx.Response:
    return httpx.get(f"{url}/test/whoami", headers={"Authorization": authorization} if authorization else {})


def _assert_invalid_key(resp: httpx.Response, why: str) -> None:
    assert resp.status_code == 401
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "invalid_api_key" and why in body["error"]["message"]
    assert "tuneforge keys create --project NAME" in body["error"]["message"]


def test_strict_server_refuses_missing_malformed_unknown_and_revoked_keys(servers, registry):
    _assert_invalid_key(_whoami(servers.strict), "requires an API key")
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer two words", "tf-no-scheme"):
        _assert_invalid_key(_whoami(servers.strict, header), "Malformed")
    _assert_invalid_key(_whoami(servers.strict, "Bearer tf-" + "x" * 43), "unknown or has been revoked")
    with pytest.raises(openai.AuthenticationError) as err:
        _client(servers.strict, "unused").models.list()
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    assert "tuneforge keys create" in err.value.message
    row, secret = keys.create_key(open_store(registry), "team-b")
    assert [m.id for m in _client(servers.strict, secret).models.list()] == ["tiny"]
    keys.revoke_key(open_store(registry), row.id)
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        _client(servers.strict, secret).chat.completions.create(model="tiny", messages=HI, max_tokens=2)


def test_valid_key_acts_for_its_project_and_is_marked_used(servers, registry, key):
    assert _whoami(servers.strict, f"Bearer {key.secret}").json() == {"project": "team-a", "key_id": key.id}
    assert _whoami(servers.strict, f"bearer  {key.secret}").json()["project"] == "team-a"
    reply = _client(servers.strict, key.secret).chat.completions.create(model="tiny", messages=HI, max_tokens=3,
                                                                       temperature=0)
    assert reply.choices[0].message.content is not None
    [row] = [k for k in keys.list_keys(open_store(registry), "team-a") if k.id == key.id]
    assert row.last_used_at is not None


def test_open_server_takes_any_key_as_default_and_a_valid_one_as_its_project(servers, registry, key):
    for header in (None, "Bearer unused", "Bearer tf-" + "y" * 43, "Basic abc"):
        assert _whoami(servers.open, header).json() == {"project": DEFAULT_PROJECT, "key_id": None}
    assert _whoami(servers.open, f"Bearer {key.secret}").json() == {"project": "team-a", "key_id": key.id}
    assert [m.id for m in _client(servers.open, "unused").models.list()] == ["tiny"]


def _assert_too_large(resp: httpx.Response, setting: str) -> None:
    assert resp.status_code == 413, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == "request_too_large"
    assert setting in body["error"]["message"] and "Traceback" not in resp.text


def test_oversized_bodies_are_413_declared_or_streamed(servers):
    big = [{"role": "user", "content": "a" * (1 << 20)}]  # the JSON is just over the 1 MB limit
    with pytest.raises(openai.APIStatusError) as err:
        _client(servers.open, "unused").chat.completions.create(model="tiny", messages=big, max_tokens=2)
    assert err.value.status_code == 413 and err.value.code == "request_too_large"
    payload = json.dumps({"model": "tiny", "messages": big, "max_tokens": 2}).encode()
    chunks = (payload[i:i + 65536] for i in range(0, len(payload), 65536))  # no Content-Length: chunked
    _assert_too_large(httpx.post(f"{servers.open}/v1/chat/completions", content=chunks,
                                 headers={"Content-Type": "application/json"}), "max_request_mb")
    ok = _client(servers.open, "unused").chat.completions.create(model="tiny", messages=HI, max_tokens=2)
    assert ok.choices[0].finish_reason in ("stop", "length")  # the connection and server still serve


def test_a_declared_oversized_body_is_refused_before_it_is_sent(servers):
    host, port = servers.open.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # headers only, no body follows
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 50000000\r\n\r\n")
        answer = b""
        while b"request_too_large" not in answer and (part := sock.recv(65536)):  # headers and body may be apart
            answer += part
    assert answer.startswith(b"HTTP/1.1 413") and b"request_too_large" in answer


def test_uploads_get_the_upload_limit_not_the_request_limit(servers):
    upload = f"{servers.open}/v1/files"
    files = {"file": ("d.jsonl", b"x" * (3 << 19))}  # 1.5 MB: over max_request_mb, under max_upload_mb
    assert httpx.post(upload, data={"purpose": "fine-tune"}, files=files).status_code != 413
    files = {"file": ("d.jsonl", b"x" * (5 << 19))}  # 2.5 MB: over max_upload_mb
    _assert_too_large(httpx.post(upload, data={"purpose": "fine-tune"}, files=files), "max_upload_mb")


def test_an_unreadable_registry_is_a_503_not_the_default_project(tmp_path):
    import anyio

    from tuneforge.serve.errors import APIError

    def request(require_keys: bool):
        settings = SimpleNamespace(require_keys=require_keys, registry_url=f"sqlite:///{tmp_path}/no/such/dir/x.db")
        (tmp_path / "no").write_text("a file where the registry's folder should be")
        return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(tuneforge=SimpleNamespace(settings=settings))))

    for require_keys in (True, False):
        with pytest.raises(APIError) as err:
            anyio.run(require_api_key, request(require_keys), "Bearer tf-" + "k" * 43)
        assert err.value.status == 503 and err.value.code == "registry_unavailable"
    assert anyio.run(require_api_key, request(False), "Bearer unused") == Caller(DEFAULT_PROJECT)  # no lookup


def test_check_bind_needs_an_active_key_beyond_loopback(tmp_path):
    url = f"sqlite:///{tmp_path / 'bind.db'}"
    try:
        for host in ("127.0.0.1", "::1", "localhost"):
            check_bind(host, insecure=False, registry_url=url)  # loopback: keys optional, registry not needed
        with pytest.raises(ConfigError, match="no active API keys") as err:
            check_bind("0.0.0.0", insecure=False, registry_url=url)
        assert "tuneforge keys create --project NAME" in str(err.value) and "--insecure" in str(err.value)
        check_bind("0.0.0.0", insecure=True, registry_url=url)
        row, _ = keys.create_key(open_store(url), "p")
        check_bind("0.0.0.0", insecure=False, registry_url=url)
        keys.revoke_key(open_store(url), row.id)
        with pytest.raises(ConfigError, match="no active API keys"):
            check_bind("192.168.1.5", insecure=False, registry_url=url)
    finally:
        close_store(url)
    assert keys_required("0.0.0.0", insecure=False) and not keys_required("0.0.0.0", insecure=True)
    assert not keys_required("127.0.0.1", insecure=False) and keys_required("::1", False, require_keys=True)


def test_serve_turns_keys_on_beyond_loopback(tmp_path, monkeypatch, tiny_model_dir):
    import tuneforge.serve.app as app_module

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    seen = []

    def fake_create_app(settings):  # stop before the model loads: only the settings matter here
        seen.append(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(app_module, "create_app", fake_create_app)
    settings = ServeSettings(model=str(tiny_model_dir), registry_url=url)
    try:
        keys.create_key(open_store(url), "p")
        for host, insecure, required in (("0.0.0.0", False, True), ("0.0.0.0", True, False),
                                         ("127.0.0.1", False, False)):
            with pytest.raises(KeyboardInterrupt):
                serve(settings, host=host, insecure=insecure)
            assert seen.pop().require_keys is required, (host, insecure)
    finally:
        close_store(url)
