"""Agents: anything that answers a conversation with a message and says what it can do.

    class Agent(Protocol):
        name: str                 # unique within a society
        description: str          # one short sentence an organiser (or a language model) can read
        def respond(self, conversation: Sequence[Message]) -> Message

Kinds here: ``CallableAgent`` (a Python function), ``ChatAgent`` (an OpenAI-compatible chat-completions
endpoint: vLLM, llama.cpp's server, Ollama, a hosted API; standard library only), ``Calculator`` and
``Lookup`` (tools). ``metarl.society.lm_agent.LMAgent`` answers with a language model trained by
``env=lm``.
"""
from __future__ import annotations

import ast
import json
import math
import operator
import os
import re
import socket
import time
import urllib.error
import urllib.request
from typing import Callable, Dict, Mapping, Optional, Protocol, Sequence, Union, runtime_checkable

from ..errors import UserError
from .messages import Message, as_chat, last_request

ABSTAIN = "abstain"  # what a tool replies when asked to vote
UNKNOWN = "I don't know."  # what a tool replies when it cannot help


@runtime_checkable
class Agent(Protocol):
    """A member of a society: ``respond(conversation) -> Message``, with a ``name`` and a ``description``."""

    name: str
    description: str

    def respond(self, conversation: Sequence[Message]) -> Message: ...


def reply(agent, content: str) -> Message:
    """An assistant message written by ``agent``."""
    return Message("assistant", str(content).strip(), name=agent.name)


class CallableAgent:
    """Wraps ``fn(conversation) -> str | Message``: deterministic members, scripted leaders, test doubles."""

    def __init__(self, name: str, fn: Callable[[Sequence[Message]], Union[str, Message]], description: str = ""):
        self.name, self.fn = name, fn
        self.description = description or (fn.__doc__ or "a Python function").strip().splitlines()[0]

    def respond(self, conversation: Sequence[Message]) -> Message:
        out = self.fn(list(conversation))
        if isinstance(out, Message):
            return Message("assistant", out.content, name=self.name, intent=None)
        return reply(self, out)

    def __repr__(self) -> str:
        return f"CallableAgent({self.name!r})"


# --------------------------------------------------------------------------------------------------- endpoints
class EndpointError(UserError, ConnectionError):
    """A chat-completions endpoint that cannot be reached, times out, refuses the request or answers garbage."""


class ChatAgent:
    """An OpenAI-compatible chat-completions endpoint: ``POST {base_url}/chat/completions``.

    base_url: up to and including the API version, as the OpenAI clients take it
    (``http://127.0.0.1:8000/v1`` for ``vllm serve``, ``http://127.0.0.1:8080/v1`` for llama.cpp's
    ``llama-server``, ``http://127.0.0.1:11434/v1`` for Ollama). api_key_env: the environment variable holding
    the key, read at each request and sent as ``Authorization: Bearer`` when set (local servers need none).
    A connection refused, a timeout, HTTP 429 or 5xx is retried ``retries`` times with exponential backoff
    (``backoff``, 2x, ...); then, or at once for any other HTTP error or an answer that is not chat-completions
    JSON, ``EndpointError`` names the URL and the fix."""

    def __init__(self, name: str, base_url: str, model: str, *, description: str = "a language model",
                 api_key_env: Optional[str] = "OPENAI_API_KEY", system: Optional[str] = None,
                 temperature: float = 0.0, max_tokens: Optional[int] = 256, timeout: float = 30.0,
                 retries: int = 2, backoff: float = 0.5):
        if not re.match(r"^https?://", base_url or ""):
            raise EndpointError(f"base_url={base_url!r} is not an http(s) URL; pass e.g. http://127.0.0.1:8000/v1")
        self.name, self.description, self.model = name, description, model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key_env, self.system = api_key_env, system
        self.temperature, self.max_tokens = temperature, max_tokens
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)

    def payload(self, conversation: Sequence[Message]) -> dict:
        messages = as_chat(conversation)
        if self.system:
            messages = [{"role": "system", "content": self.system}] + messages
        body = {"model": self.model, "messages": messages, "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def _request(self, body: bytes) -> urllib.request.Request:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return urllib.request.Request(self.url, data=body, headers=headers, method="POST")

    def complete(self, conversation: Sequence[Message]) -> str:
        """The assistant text the endpoint answers to ``conversation``."""
        body = json.dumps(self.payload(conversation)).encode("utf-8")
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                with urllib.request.urlopen(self._request(body), timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as err:
                detail = err.read()[:200].decode("utf-8", "replace").strip()
                if err.code == 429 or err.code >= 500:
                    problem = f"HTTP {err.code} {detail}"
                    continue
                raise EndpointError(self._http_fix(err.code, detail)) from None
            except (socket.timeout, TimeoutError):
                problem = f"no answer within {self.timeout:g} s"
                continue
            except urllib.error.URLError as err:
                reason = err.reason
                if isinstance(reason, (socket.timeout, TimeoutError)):
                    problem = f"no answer within {self.timeout:g} s"
                else:
                    problem = f"unreachable ({reason})"
                continue
            except (ConnectionError, OSError) as err:
                problem = f"unreachable ({err})"
                continue
            return self._content(raw)
        fix = ("raise ChatAgent(timeout=...) or use a smaller model" if problem.startswith("no answer") else
               "start the server (vllm serve <model>, llama-server -m <gguf>, ollama serve) or pass the right "
               "base_url / --base-url")
        raise EndpointError(f"chat endpoint {self.url}: {problem} after {self.retries + 1} attempt(s); {fix}")

    def _http_fix(self, code: int, detail: str) -> str:
        head = f"chat endpoint {self.url} answered HTTP {code}" + (f" ({detail})" if detail else "")
        if code in (401, 403):
            return f"{head}; set the API key in the environment variable {self.api_key_env}"
        if code == 404:
            return f"{head}; check base_url (it ends with the API version, e.g. /v1) and model={self.model!r}"
        return f"{head}; check the request (model={self.model!r}, max_tokens={self.max_tokens})"

    def _content(self, raw: bytes) -> str:
        try:
            data = json.loads(raw)
            content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise EndpointError(f"chat endpoint {self.url} did not answer chat-completions JSON "
                                f"({raw[:120]!r}); point base_url at an OpenAI-compatible server") from None
        return "" if content is None else str(content)

    def respond(self, conversation: Sequence[Message]) -> Message:
        return reply(self, self.complete(conversation))

    def __repr__(self) -> str:
        return f"ChatAgent({self.name!r}, {self.url!r}, model={self.model!r})"


# ------------------------------------------------------------------------------------------------------ tools
class CalculatorError(UserError, ValueError):
    """An expression the calculator does not evaluate (a name it does not know, a syntax error, too large)."""


_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "abs": abs, "round": round, "min": min, "max": max, "log": math.log,
              "exp": math.exp, "sin": math.sin, "cos": math.cos, "floor": math.floor, "ceil": math.ceil}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPRESSION = 200  # characters
MAX_POWER = 10_000  # the largest |exponent| (and a bound on the base's size) of **
MAX_BITS = 4_096  # the largest integer result


def calculate(expression: str) -> Union[int, float]:
    """The value of an arithmetic expression, read with ``ast`` (never ``eval``): numbers, ``+ - * / // % **``
    (``^`` is read as ``**``), parentheses, ``pi``, ``e`` and the functions ``sqrt abs round min max log exp sin
    cos floor ceil``. Anything else raises ``CalculatorError``."""
    text = expression.strip().replace("^", "**")
    if len(text) > MAX_EXPRESSION:
        raise CalculatorError(f"expression of {len(text)} characters; the calculator reads at most {MAX_EXPRESSION}")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise CalculatorError(f"{expression!r} is not an arithmetic expression") from None

    def value(node):
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > MAX_POWER or abs(left) > 10 ** 6 and abs(right) > 64):
                raise CalculatorError(f"{expression!r}: the power is too large to compute")
            try:
                return _BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise CalculatorError(f"{expression!r} divides by zero") from None
            except OverflowError:
                raise CalculatorError(f"{expression!r}: the result is too large") from None
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](value(node.operand))
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                and not node.keywords):
            try:
                return _FUNCTIONS[node.func.id](*[value(a) for a in node.args])
            except (TypeError, ValueError, OverflowError) as err:
                raise CalculatorError(f"{expression!r}: {node.func.id}: {err}") from None
        what = node.id if isinstance(node, ast.Name) else type(node).__name__
        raise CalculatorError(f"{expression!r}: {what!r} is not allowed; the calculator knows numbers, "
                              f"+ - * / // % ** and {', '.join(sorted(_FUNCTIONS))}")

    result = value(tree)
    if isinstance(result, int) and result.bit_length() > MAX_BITS:
        raise CalculatorError(f"{expression!r}: the result has more than {MAX_BITS} bits")
    if isinstance(result, float) and result.is_integer() and abs(result) < 2 ** 53:
        return int(result)
    return result


_SPAN = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+|[-+*/%^()\s]|\b(?:sqrt|abs|round|min|max|log|exp|sin|cos|floor|ceil|pi)\b|,)+")


def find_expression(text: str) -> Optional[str]:
    """The longest part of ``text`` that the calculator evaluates and that holds an operator or a function
    ("What is 12 * (3 + 4)?" -> "12 * (3 + 4)"); the whole text first; None when there is none."""
    candidates = [text] + sorted((m.group().strip(" ,") for m in _SPAN.finditer(text)), key=len, reverse=True)
    for candidate in candidates:
        if not re.search(r"\d", candidate) or not re.search(r"[-+*/%^(]", candidate.lstrip("-+")):
            continue
        try:
            calculate(candidate)
            return candidate.strip()
        except CalculatorError:
            continue
    return None


def _format(number) -> str:
    return str(number) if isinstance(number, int) else f"{number:.10g}"


class Tool:
    """A tool member: answers the text of the last request; abstains from votes and does not choose speakers."""

    name: str
    description: str

    def answer(self, text: str) -> str:
        raise NotImplementedError

    def respond(self, conversation: Sequence[Message]) -> Message:
        request = last_request(conversation)
        if request.intent in ("vote", "choose"):
            return reply(self, ABSTAIN)
        return reply(self, self.answer(request.content))


class Calculator(Tool):
    """Finds the arithmetic expression in the request and answers its value (``calculate``); UNKNOWN if none.

    read_talk: when the request holds no expression, the calculator evaluates the latest one another member
    wrote in the conversation (a blackboard: in a democracy nobody hands it a question, but it reads the
    earlier rounds)."""

    def __init__(self, name: str = "calculator",
                 description: str = "computes arithmetic expressions exactly (+ - * / ** sqrt ...)",
                 read_talk: bool = False):
        self.name, self.description, self.read_talk = name, description, read_talk

    def answer(self, text: str) -> str:
        expression = find_expression(text)
        return UNKNOWN if expression is None else _format(calculate(expression))

    def respond(self, conversation: Sequence[Message]) -> Message:
        request = last_request(conversation)
        if not self.read_talk or request.intent in ("vote", "choose") or find_expression(request.content):
            return super().respond(conversation)
        for m in reversed(conversation):
            if m.role != "system" and m.name not in (None, self.name, "task", "organiser"):
                expression = find_expression(m.content)
                if expression is not None:
                    return reply(self, _format(calculate(expression)))
        return reply(self, UNKNOWN)


class Lookup(Tool):
    """A table of facts: answers the value of every key named in the request (case-insensitive, whole words,
    longest keys first, each place of the text used once); UNKNOWN if none."""

    def __init__(self, table: Mapping[str, str], name: str = "lookup", description: str = ""):
        self.table: Dict[str, str] = {str(k): str(v) for k, v in table.items()}
        self.name = name
        self.description = description or f"looks up facts about: {', '.join(list(self.table)[:8])}"

    def answer(self, text: str) -> str:
        found, used = [], []
        for key in sorted(self.table, key=len, reverse=True):
            for m in re.finditer(rf"(?<!\w){re.escape(key)}(?!\w)", text, flags=re.IGNORECASE):
                if not any(a < m.end() and m.start() < b for a, b in used):
                    used.append((m.start(), m.end()))
                    found.append((m.start(), self.table[key]))
                    break
        return "; ".join(v for _, v in sorted(found)) if found else UNKNOWN
