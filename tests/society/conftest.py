"""A real chat-completions server on 127.0.0.1 (the standard library's http.server in a thread)."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class ChatServer:
    """Answers POST /v1/chat/completions with ``answer(messages)``; ``mode`` scripts failures:
    ``ok``, ``slow`` (sleeps ``delay`` s first), ``fail_then_ok`` (HTTP 503 ``failures`` times), ``garbage``,
    ``unauthorized`` (401 unless the bearer key is ``secret``)."""

    def __init__(self):
        self.mode, self.delay, self.failures = "ok", 0.0, 0
        self.requests = []  # (path, headers, body)
        self.answer = lambda messages: "echo: " + messages[-1]["content"]
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append((self.path, dict(self.headers), body))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if server.mode == "slow":
                    time.sleep(server.delay)
                if server.mode == "fail_then_ok" and server.failures > 0:
                    server.failures -= 1
                    return self._send(503, {"error": "overloaded"})
                if server.mode == "unauthorized" and self.headers.get("Authorization") != "Bearer secret":
                    return self._send(401, {"error": "bad key"})
                if server.mode == "garbage":
                    return self._send(200, {"nothing": "here"})
                content = server.answer(body["messages"])
                self._send(200, {"id": "x", "object": "chat.completion", "model": body.get("model"),
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": content}}]})

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    with ChatServer() as server:
        yield server


@pytest.fixture(scope="session")
def glyph_checkpoint(tmp_path_factory):
    """A real Conv-4 glyph classifier, trained once per session on the engine loop (40 updates, a few seconds)."""
    import torch

    from metarl.society.describer import train_glyph_classifier

    torch.set_num_threads(1)
    return train_glyph_classifier(tmp_path_factory.mktemp("describer"), steps=40, seed=0)
