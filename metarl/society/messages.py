"""Messages and conversations: what every agent reads and writes.

A conversation is a list of ``Message`` (oldest first). ``role`` is the chat-completions role of the
message (``system``, ``user``, ``assistant``); ``name`` is who wrote it in a society (a member's name, the
organiser, the task); ``intent`` is what the organiser asks for in a request (``answer``, ``choose``,
``propose``, ``vote``, ``final``), so that deterministic agents can branch on it without parsing prose.
Remote endpoints see only ``role`` and ``content``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence

ROLES = ("system", "user", "assistant")
INTENTS = ("task", "answer", "choose", "propose", "vote", "final")


@dataclass
class Message:
    """One message of a conversation."""

    role: str  # system | user | assistant
    content: str  # the text
    name: Optional[str] = None  # who wrote it (a member, the organiser); None: the user
    intent: Optional[str] = None  # what a request asks for (INTENTS); None on replies

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Message":
        return cls(role=d["role"], content=d["content"], name=d.get("name"), intent=d.get("intent"))


Conversation = List[Message]


def last_request(conversation: Sequence[Message]) -> Message:
    """The last message not written by an assistant (what the agent is asked); an empty one if none."""
    for message in reversed(conversation):
        if message.role != "assistant":
            return message
    return Message("user", "")


def as_chat(conversation: Sequence[Message]) -> list:
    """The conversation in the chat-completions format; messages of named speakers get a ``[name]`` prefix."""
    out = []
    for m in conversation:
        content = m.content if m.name is None or m.role == "system" else f"[{m.name}] {m.content}"
        out.append({"role": m.role, "content": content})
    return out
