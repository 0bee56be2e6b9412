"""Agents: encoders + core + heads = policies (``make_agent``)."""
from metarl import cores

from .encoders import ImpalaCNN, MLPEncoder, make_encoder
from .policy import Agent


def make_agent(obs_shape, num_actions: int, agent_cfg, amp: bool = False) -> Agent:
    """The Agent an ``agent`` config describes (its core from ``metarl.cores.from_config``); ``amp``: bf16
    autocast of the encoder."""
    return Agent(obs_shape, num_actions, cores.from_config(agent_cfg), encoder_hidden=agent_cfg.encoder_hidden,
                 truncate_grad_each_step=agent_cfg.truncate_grad_each_step, amp=amp)


__all__ = ["Agent", "ImpalaCNN", "MLPEncoder", "make_encoder", "make_agent"]
