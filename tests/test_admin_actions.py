"""The admin listener's actions in memory: the token, the cross-site checks,
and what reaches the daemon.  (Through a real daemon: tests/test_control.py.)"""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
from types import SimpleNamespace

import pytest_twisted
import treq
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.internet.defer import fail, succeed
from twisted.logger import capturedLogs, formatEvent
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from msisdnd.api.admin import admin_site
from msisdnd.api.admin_actions import ActionRefused, ActionsResource
from msisdnd.cli import admin_action
from msisdnd.config import AdminToken
from msisdnd.control import Control

TOKEN = "k" * 43
TOKENS = (AdminToken("ops", hashlib.sha256(TOKEN.encode()).digest()),)


class Actions:
    def __init__(self):
        self.done: list[tuple] = []

    def suspend(self, carrier, unbind, by):
        self.done.append(("suspend", carrier, unbind, by))
        return succeed({"carrier": carrier})

    def resume(self, carrier, by):
        self.done.append(("resume", carrier, by))

    def rebind(self, carrier):
        self.done.append(("rebind", carrier))

    def reload(self):
        return fail(ActionRefused(409, "the new configuration is refused: bad"))

    def setLogLevel(self, level):
        self.done.append(("level", level))


def post(resource, path: list[bytes], body: object = None, content: bytes | None = None,
         **headers: str):
    request = DummyRequest(path[1:])
    request.prepath = path[:1]
    request.method = b"POST"
    request.content = io.BytesIO(json.dumps(body or {}).encode() if content is None else content)
    sent = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}", **headers}
    for name, value in sent.items():
        if value is not None:
            request.requestHeaders.setRawHeaders(name.replace("_", "-"), [value])
    result = resource.render(request)
    if result is not NOT_DONE_YET:
        request.write(result)
        request.finish()
    return request.responseCode or 200, json.loads(b"".join(request.written))


def test_an_action_with_the_token_reaches_the_daemon_named():
    actions = Actions()
    resource = ActionsResource(actions, lambda: TOKENS)
    assert post(resource, [b"carriers", b"acme", b"suspend"], {"unbind": True}) == (
        200, {"ok": True, "carrier": "acme"})
    assert post(resource, [b"log-level"], {"level": "debug"})[0] == 200
    assert actions.done == [("suspend", "acme", True, "ops"), ("level", "debug")]


def test_refusals_do_nothing():
    actions = Actions()
    resource = ActionsResource(actions, lambda: TOKENS)
    path = [b"carriers", b"acme", b"rebind"]
    assert post(resource, path, authorization=None)[0] == 401
    assert post(resource, path, authorization="Bearer " + "x" * 43)[0] == 403
    assert post(resource, path, authorization=f"Basic {TOKEN}")[0] == 401
    assert post(resource, path, origin="https://evil.example")[0] == 403
    assert post(resource, path, sec_fetch_site="same-site")[0] == 403
    assert post(resource, path, content_type="application/x-www-form-urlencoded")[0] == 415
    assert post(resource, [b"carriers", b"acme", b"explode"])[0] == 400
    assert post(resource, [b"carriers", b"acme", b"suspend"], {"unbind": "yes"})[0] == 400
    assert post(resource, [b"log-level"], {"level": "trace"})[0] == 400
    assert actions.done == []


def test_without_a_token_file_every_action_is_refused_saying_why():
    actions = Actions()
    status, body = post(ActionsResource(actions, lambda: ()), [b"carriers", b"acme", b"rebind"])
    assert status == 403 and "no [admin] token_file" in body["error"]
    assert actions.done == []


def test_a_refused_reload_answers_409_with_the_reason():
    status, body = post(ActionsResource(Actions(), lambda: TOKENS), [b"reload"])
    assert (status, body) == (409, {"error": "the new configuration is refused: bad"})


def test_a_body_too_deep_or_too_large_is_a_clear_400():
    actions = Actions()
    resource = ActionsResource(actions, lambda: TOKENS)
    deep = post(resource, [b"log-level"], content=b"[" * 4000)
    large = post(resource, [b"log-level"], content=b'{"level": "debug"' + b" " * 5000 + b"}")
    assert deep[0] == 400 and "nested" in deep[1]["error"]
    assert large == (400, {"error": "the body is larger than 4096 bytes"})
    assert actions.done == []


def test_the_bearer_scheme_is_case_insensitive():
    actions = Actions()
    resource = ActionsResource(actions, lambda: TOKENS)
    assert post(resource, [b"log-level"], {"level": "warn"}, authorization=f"bearer {TOKEN}")[0] == 200
    assert actions.done == [("level", "warn")]


@pytest_twisted.inlineCallbacks
def test_the_admin_listener_refuses_a_large_body_unread():
    """A stranger cannot make the admin listener buffer a body of any size."""
    actions = Actions()
    site = admin_site(CollectorRegistry(), None, actions=actions, tokens=lambda: TOKENS)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    try:
        response = yield treq.post(f"http://127.0.0.1:{port.getHost().port}/log-level",
                                   data=b"{" + b" " * 1_000_000 + b"}",
                                   headers={"Content-Type": ["application/json"]})
        assert response.code == 413
    finally:
        yield port.stopListening()
    assert actions.done == []


def test_a_rebind_whose_tls_files_cannot_load_is_refused_not_an_error():
    """The binds stay as they were, and the operator reads why (409, not 500)."""
    class Carriers:
        def rebind(self, name):
            raise ValueError(f"carrier {name!r}: its TLS files cannot be loaded: bad PEM")

    control = Control(SimpleNamespace(carriers=Carriers()))
    status, body = post(ActionsResource(control, lambda: TOKENS), [b"carriers", b"tls", b"rebind"])
    assert status == 409 and "its TLS files cannot be loaded" in body["error"]


def test_a_strangers_path_reaches_the_audit_line_escaped():
    """No carriage return or terminal escape from the URL gets into the log."""
    resource = ActionsResource(Actions(), lambda: TOKENS)
    with capturedLogs() as events:
        post(resource, [b"carriers", b"x\r\x1b[2Jfake", b"suspend"], authorization=None)
    (line,) = [formatEvent(e) for e in events if e.get("log_namespace") == "msisdnd.audit"]
    assert "\r" not in line and "\x1b" not in line and "fake" in line


def test_the_cli_sends_the_token_to_the_admin_listener_not_to_a_proxy(tmp_path, monkeypatch):
    """An operator's shell may set http_proxy: the admin token still goes
    only to the --admin URL."""
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.headers["Authorization"])
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.handle_request, daemon=True).start()
    (tmp_path / "token").write_text(f"ops {TOKEN}\r\n")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = admin_action(f"http://127.0.0.1:{server.server_port}", "/reload", {},
                        str(tmp_path / "token"), out, err, timeout=5)
    server.server_close()
    assert code == 0, err.getvalue()
    assert seen == [f"Bearer {TOKEN}"]
