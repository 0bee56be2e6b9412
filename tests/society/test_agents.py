"""Agents: a real chat-completions server on 127.0.0.1, timeouts, unreachable servers, the tools."""
from __future__ import annotations

import socket
import time

import pytest

from metarl.errors import UserError
from metarl.society import (ABSTAIN, UNKNOWN, Agent, Calculator, CalculatorError, CallableAgent, ChatAgent,
                            EndpointError, Lookup, Message, calculate, find_expression)


def conversation(text, intent="answer"):
    return [Message("system", "be brief"), Message("user", text, name="leader", intent=intent)]


def test_chat_agent_talks_to_a_real_server(chat_server, monkeypatch):
    monkeypatch.setenv("TEST_KEY", "secret")
    agent = ChatAgent("remote", chat_server.base_url, "tiny-model", api_key_env="TEST_KEY", system="You help.",
                      timeout=5)
    assert isinstance(agent, Agent)
    out = agent.respond(conversation("What is 2 + 2?"))
    assert out.role == "assistant" and out.name == "remote"
    assert out.content == "echo: [leader] What is 2 + 2?"
    path, headers, body = chat_server.requests[-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer secret"
    assert body["model"] == "tiny-model" and body["temperature"] == 0.0
    assert [m["role"] for m in body["messages"]] == ["system", "system", "user"]
    assert body["messages"][0]["content"] == "You help."


def test_retries_a_503_then_succeeds(chat_server):
    chat_server.mode, chat_server.failures = "fail_then_ok", 2
    agent = ChatAgent("remote", chat_server.base_url, "m", timeout=5, retries=2, backoff=0.01)
    assert agent.complete(conversation("hi")).startswith("echo:")
    assert len(chat_server.requests) == 3


def test_timeout_names_the_url_and_the_fix(chat_server):
    chat_server.mode, chat_server.delay = "slow", 1.5
    agent = ChatAgent("remote", chat_server.base_url, "m", timeout=0.2, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(EndpointError) as err:
        agent.complete(conversation("hi"))
    assert time.monotonic() - start < 1.4  # two attempts of 0.2 s, not the server's 1.5 s
    message = str(err.value)
    assert chat_server.base_url + "/chat/completions" in message and "0.2 s" in message and "timeout" in message
    assert isinstance(err.value, UserError)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    agent = ChatAgent("remote", url, "m", timeout=1, retries=1, backoff=0.01)
    with pytest.raises(EndpointError) as err:
        agent.respond(conversation("hi"))
    message = str(err.value)
    assert f"{url}/chat/completions" in message and "unreachable" in message and "2 attempt(s)" in message
    assert "start the server" in message and "--base-url" in message
    assert isinstance(err.value, ConnectionError)


def test_http_errors_and_garbage(chat_server, monkeypatch):
    monkeypatch.delenv("TEST_KEY", raising=False)
    chat_server.mode = "unauthorized"
    with pytest.raises(EndpointError, match="401.*TEST_KEY"):
        ChatAgent("r", chat_server.base_url, "m", api_key_env="TEST_KEY", retries=0).complete(conversation("x"))
    with pytest.raises(EndpointError, match="404.*base_url"):
        ChatAgent("r", chat_server.base_url.replace("/v1", "/v2"), "m", retries=0).complete(conversation("x"))
    chat_server.mode = "garbage"
    with pytest.raises(EndpointError, match="chat-completions JSON"):
        ChatAgent("r", chat_server.base_url, "m", retries=0).complete(conversation("x"))
    with pytest.raises(EndpointError, match="not an http"):
        ChatAgent("r", "localhost:8000", "m")


@pytest.mark.parametrize("text, value", [("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("2^10", 1024), ("7 / 2", 3.5),
                                         ("-3 ** 2", -9), ("sqrt(16) + abs(-2)", 6), ("17 // 5 + 17 % 5", 5),
                                         ("max(1, 5, 3)", 5), ("2 * pi", 6.283185307179586)])
def test_calculator_values(text, value):
    assert calculate(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["__import__('os').system('true')", "open('x')", "x + 1", "1 / 0", "9 ** 99999",
                                  "(1).real", "[1, 2]", "2.0 ** 5000", "10 ** 5000", "lambda: 1", "1 if 1 else 2", "2 +"])
def test_calculator_refuses_what_is_not_arithmetic(text):
    with pytest.raises(CalculatorError):
        calculate(text)


def test_calculator_agent_and_lookup():
    calc = Calculator()
    assert find_expression("What is 12 * (3 + 4)? Thanks.") == "12 * (3 + 4)"
    assert find_expression("In 1999 there were 3 cats") is None
    assert calc.respond(conversation("What is 12 * (3 + 4)?")).content == "84"
    assert calc.respond(conversation("How much is 1.5 * 3?")).content == "4.5"
    assert calc.respond(conversation("Who wrote Faust?")).content == UNKNOWN
    assert calc.respond(conversation("1. 42\n2. 41", intent="vote")).content == ABSTAIN
    capitals = Lookup({"France": "Paris", "Japan": "Tokyo", "New Zealand": "Wellington"}, name="atlas")
    assert capitals.respond(conversation("What is the capital of france?")).content == "Paris"
    assert capitals.respond(conversation("Japan or New Zealand?")).content == "Tokyo; Wellington"
    assert capitals.respond(conversation("What about Zealand?")).content == UNKNOWN
    assert "France" in capitals.description


def test_callable_agent():
    agent = CallableAgent("shout", lambda conv: conv[-1].content.upper(), "shouts the request")
    out = agent.respond(conversation("hi"))
    assert (out.content, out.name, agent.description) == ("HI", "shout", "shouts the request")
