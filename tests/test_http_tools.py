"""The business's own HTTP tools: the admin's JSON file checked when read, the model's arguments
checked before anything is sent, requests built so an argument cannot change where they go, and a
turn in which the model (the real google-genai SDK against the Gemini emulator) calls a tool on a
real HTTP server on loopback and answers from its result, or apologises when it fails."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.fake_asterisk import FakeAsterisk, call_recording, fastagi_env
from harness.helpers import config_for
from harness.servers import in_process_fastagi
from voiceassist.call.assistant import Assistant
from voiceassist.call.tools import read_tools, run_tool
from voiceassist.errors import ConfigError
from voiceassist.types import ToolCall

ORDER_SCHEMA = {"type": "object", "properties": {"order": {"type": "string", "pattern": "^[A-Z0-9-]{3,20}$"},
                                                 "detail": {"type": "string", "enum": ["short", "full"]}},
                "required": ["order"], "additionalProperties": False}


class Shop:
    """A business's API on 127.0.0.1: records every request; answers as ``respond`` says."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.respond = lambda path: (200, {"order": path.rsplit("/", 1)[-1].split("?")[0], "status": "shipped"})
        self.delay = 0.0
        shop = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                shop.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers),
                                      "body": self.rfile.read(length).decode() if length else ""})
                time.sleep(shop.delay)
                status, body = shop.respond(self.path)
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                if status in (301, 302):
                    self.send_header("Location", "http://127.0.0.1:9/elsewhere")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shop():
    server = Shop()
    yield server
    server.close()


def tools_file(tmp_path: Path, tools: list[dict]) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": tools}))
    path.chmod(0o640)
    return path


def order_tool(shop: Shop, **changes) -> dict:
    return {"name": "order_status", "description": "The status of an order, by its number.",
            "parameters": ORDER_SCHEMA, "method": "GET", "url": f"{shop.url}/orders/{{order}}",
            "headers": {"Authorization": "Bearer ${env:SHOP_TOKEN}"}, "timeout": 1, **changes}


def one_tool(tmp_path, shop, **changes):
    (tool,) = read_tools(str(tools_file(tmp_path, [order_tool(shop, **changes)])), {"SHOP_TOKEN": "tok-123"})
    return tool


# -- the admin's file ------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    ({"name": "transfer"}, "name 'transfer'"),
    ({"name": "Order Status"}, "lower-case"),
    ({"parameters": {"type": "object", "properties": {"order": {"type": "strin"}}}}, "not a valid JSON schema"),
    ({"url": "ftp://example.com/x"}, "url must be"),
    ({"url": "http://{order}.example.com/"}, "url must be"),
    ({"url": "http://127.0.0.1/{account}"}, "names account"),
    ({"method": "DELETE"}, "GET or POST"),
    ({"headers": {"X-Token": "${env:NOT_SET}"}}, "environment variable NOT_SET"),
    ({"headers": {"X-Evil": "a\r\nHost: elsewhere"}}, "one-line"),
])
def test_a_tool_that_is_not_well_declared_is_refused_with_the_reason(tmp_path, shop, change, message):
    with pytest.raises(ConfigError, match=message):
        one_tool(tmp_path, shop, **change)


def test_a_tools_file_others_can_write_is_refused_when_run_as_root(tmp_path, shop):
    if os.geteuid() != 0:
        pytest.skip("the check is for commands run as root")
    path = tools_file(tmp_path, [order_tool(shop)])
    path.chmod(0o666)
    with pytest.raises(ConfigError, match="users other than root"):
        read_tools(str(path), {"SHOP_TOKEN": "x"})


# -- one request -------------------------------------------------------------------------------------------
def test_the_arguments_fill_the_url_percent_encoded_and_the_secret_header_is_sent(tmp_path, shop):
    tool = one_tool(tmp_path, shop)
    result = run_tool(tool, ToolCall("order_status", {"order": "AB-123", "detail": "short"}), 2000)
    assert result.ok and json.loads(result.content) == {"order": "AB-123", "status": "shipped"}
    (request,) = shop.requests
    assert request["path"] == "/orders/AB-123?detail=short"
    assert request["headers"]["Authorization"] == "Bearer tok-123"


def test_an_argument_cannot_change_where_the_request_goes(tmp_path, shop):
    loose = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}
    tool = one_tool(tmp_path, shop, parameters=loose)
    run_tool(tool, ToolCall("order_status", {"order": "../admin?delete=all#x"}), 2000)
    assert shop.requests[0]["path"] == "/orders/..%2Fadmin%3Fdelete%3Dall%23x"


@pytest.mark.parametrize("arguments", [{"order": "ab 1"}, {}, {"order": "AB-1", "extra": "x"}, ["AB-1"]])
def test_arguments_that_do_not_fit_the_schema_are_never_sent(tmp_path, shop, arguments):
    result = run_tool(one_tool(tmp_path, shop), ToolCall("order_status", arguments), 2000)
    assert not result.ok and not result.sent and shop.requests == []


def test_a_post_tool_sends_the_arguments_as_json(tmp_path, shop):
    tool = one_tool(tmp_path, shop, method="POST", url=f"{shop.url}/lookup")
    run_tool(tool, ToolCall("order_status", {"order": "AB-123", "detail": "full"}), 2000)
    assert json.loads(shop.requests[0]["body"]) == {"order": "AB-123", "detail": "full"}


def test_a_slow_tool_times_out_quickly(tmp_path, shop):
    shop.delay = 3.0
    started = time.monotonic()
    result = run_tool(one_tool(tmp_path, shop, timeout=0.5), ToolCall("order_status", {"order": "AB-1"}), 2000)
    assert not result.ok and result.sent and time.monotonic() - started < 1.5


@pytest.mark.parametrize("status", [500, 404, 302])
def test_an_error_or_a_redirect_is_a_failure(tmp_path, shop, status):
    shop.respond = lambda path: (status, {"error": "x"})
    result = run_tool(one_tool(tmp_path, shop), ToolCall("order_status", {"order": "AB-1"}), 2000)
    assert not result.ok and result.status == status and len(shop.requests) == 1


def test_a_long_answer_is_cut_for_the_model(tmp_path, shop):
    shop.respond = lambda path: (200, "x" * 50_000)
    result = run_tool(one_tool(tmp_path, shop), ToolCall("order_status", {"order": "AB-1"}), 500)
    assert result.ok and len(result.content) < 520


# -- a turn that uses a tool -----------------------------------------------------------------------------
def _answers_from_the_tool(body: dict):
    """The emulated model: calls the tool, then answers from the function response it is given."""
    last = body["contents"][-1]["parts"][0]
    if "functionResponse" in last:
        status = json.loads(last["functionResponse"]["response"]["content"])["status"]
        return f"Your order has {status}."
    return ToolCall("order_status", {"order": "AB-123"})


@pytest.fixture
def server(emulators, tmp_path, shop, monkeypatch):
    monkeypatch.setenv("SHOP_TOKEN", "tok-123")
    path = tools_file(tmp_path, [order_tool(shop)])
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"[tools]\nfile = {path}\nmax_calls_per_turn = 2\n"))
    with in_process_fastagi(assistant) as instance:
        yield instance


def run_turn(server, tmp_path, uniqueid="1700000000.9"):
    wav = call_recording(tmp_path / "spool/voiceassist", uniqueid)
    client = FakeAsterisk(server.server_address[1], fastagi_env(
        "voiceassist", uniqueid, ["turn", str(wav), "NOISE", "1", str(int(time.time())), "8008", uniqueid]))
    client.run()
    with sqlite3.connect(tmp_path / "voiceassist.db") as db:
        db.row_factory = sqlite3.Row
        turn = dict(db.execute("SELECT * FROM voiceassist_turns ORDER BY id DESC LIMIT 1").fetchone())
    return client.variables(), turn


def test_the_model_answers_from_the_tools_result(server, emulators, shop, tmp_path):
    emulators["speech"].default_transcript = "Where is my order AB-123?"
    emulators["gemini"].reply = _answers_from_the_tool
    variables, turn = run_turn(server, tmp_path)
    assert variables["VOICEASSIST_REPLY"] == "Your order has shipped."
    assert turn["status"] == "ok" and turn["reply"] == "Your order has shipped."
    assert [r["path"] for r in shop.requests] == ["/orders/AB-123"]
    # the second request to the model carried its call and the tool's answer
    second = json.loads(emulators["gemini"].requests[-1].body)
    assert second["contents"][-2]["parts"][0]["functionCall"]["name"] == "order_status"


def test_a_failing_tool_is_a_spoken_apology_not_silence(server, emulators, shop, tmp_path):
    shop.respond = lambda path: (503, {"error": "down"})
    emulators["gemini"].reply = _answers_from_the_tool
    variables, turn = run_turn(server, tmp_path)
    assert variables["VOICEASSIST_REPLY"] == "Sorry, I couldn't look that up right now."
    assert turn["status"] == "ok" and "order_status failed: HTTP 503" in (turn["error"] or "")
    assert variables["VA_CONTINUE"] == "1"


def test_a_model_that_keeps_calling_tools_is_stopped_at_the_limit(server, emulators, shop, tmp_path):
    emulators["gemini"].reply = lambda body: ToolCall("order_status", {"order": "AB-123"})
    variables, turn = run_turn(server, tmp_path)
    assert len(shop.requests) == 2  # [tools] max_calls_per_turn
    assert variables["VOICEASSIST_REPLY"] == "Sorry, I couldn't look that up right now."


def test_an_openai_compatible_model_gets_the_tools_result_as_a_tool_message(emulators, shop, tmp_path, monkeypatch):
    from voiceassist.call.conversation import open_reply

    monkeypatch.setenv("SHOP_TOKEN", "tok-123")
    path = tools_file(tmp_path, [order_tool(shop)])
    assistant = Assistant(config_for(emulators, tmp_path, extra=f"[llm]\nprovider = openai_chat\n[tools]\nfile = {path}\n"))

    def model(body):
        last = body["messages"][-1]
        if last["role"] == "tool":
            return f"Your order has {json.loads(last['content'])['status']}."
        return ToolCall("order_status", {"order": "AB-123"})

    emulators["tts"].chat_reply = model
    reply, provider = open_reply(assistant, [], "Where is my order AB-123?", lambda name, exc: None)
    assert "".join(reply) == "Your order has shipped." and provider == "openai_chat"
    messages = emulators["tts"].requests[-1].json()["messages"]
    call, result = messages[-2], messages[-1]
    assert call["tool_calls"][0]["function"]["name"] == "order_status"
    assert result["tool_call_id"] == call["tool_calls"][0]["id"] and result["tool_call_id"].startswith("call_")
