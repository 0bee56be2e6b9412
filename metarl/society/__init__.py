"""Societies of minds (NLSOM, Zhuge et al. 2023): agents that talk in natural language, mindstorms under a
monarchical or democratic organiser, and an economy that assigns the reward and learns whom to ask.

    from metarl.society import CallableAgent, Calculator, Lookup, ChatAgent, Monarchy, Democracy, Budget, mindstorm
    t = mindstorm("What is 6 * 7?", [Calculator(), Lookup({"France": "Paris"})], Democracy(), Budget(rounds=2),
                  run_dir="runs/society")   # transcript.json and transcript.md
    t.answer                                 # '42'

``LMAgent`` (``metarl.society.lm_agent``, imported on first use: it needs torch) answers with a language
model trained by ``env=lm``; ``ImageDescriber`` and its ``Gallery`` (``metarl.society.describer``, also on first
use) answer what a trained image classifier sees in the images a task names ``image:<name>``. The glyph
questions of the offline demonstration are ``metarl.society.glyph_task``; ``python -m metarl.train
env=society/glyph_sum`` measures them (``metarl.society.trainer``).
"""
from .agents import (ABSTAIN, UNKNOWN, Agent, Calculator, CalculatorError, CallableAgent, ChatAgent, EndpointError,
                     Lookup, Tool, calculate, find_expression)
from .economy import (CREDIT_RULES, BanditOrganiser, SocietyTask, agreement_credit, equal_credit,
                      product_or_capital_tasks, run_economy, shapley)
from .messages import Message, as_chat, last_request
from .mindstorm import ORGANISERS, Budget, Democracy, Entry, Monarchy, Transcript, mindstorm, parse_choice

__all__ = ["ABSTAIN", "UNKNOWN", "Agent", "Calculator", "CalculatorError", "CallableAgent", "ChatAgent",
           "EndpointError", "Lookup", "Tool", "calculate", "find_expression",
           "CREDIT_RULES", "BanditOrganiser", "SocietyTask", "agreement_credit", "equal_credit",
           "product_or_capital_tasks", "run_economy",
           "shapley", "Message", "as_chat", "last_request",
           "ORGANISERS", "Budget", "Democracy", "Entry", "Monarchy", "Transcript", "mindstorm", "parse_choice",
           "LMAgent", "ImageDescriber", "Gallery"]


def __getattr__(name):
    if name == "LMAgent":
        from .lm_agent import LMAgent

        return LMAgent
    if name in ("ImageDescriber", "Gallery"):
        from . import describer

        return getattr(describer, name)
    raise AttributeError(f"module 'metarl.society' has no attribute {name!r}")
