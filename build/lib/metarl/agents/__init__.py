"""Agents: encoders + core + heads = policies (``make_agent``)."""
from .encoders import ImpalaCNN, MLPEncoder, make_encoder
from .policy import Agent


def make_agent(obs_shape, num_actions: int, agent_cfg) -> Agent:
    """Build an Agent from an ``agent`` config (``name: ff`` means no memory)."""
    from omegaconf import OmegaConf

    to_dict = lambda node: OmegaConf.to_container(node) if OmegaConf.is_config(node) else dict(node or {})
    return Agent(obs_shape, num_actions, core_name=None if agent_cfg.name == "ff" else agent_cfg.name,
                 d_model=agent_cfg.d_model, num_layers=agent_cfg.num_layers, num_heads=agent_cfg.num_heads,
                 ff=agent_cfg.ff, d_ff=agent_cfg.d_ff, dropout=agent_cfg.dropout,
                 ff_options=to_dict(agent_cfg.ff_options), core_options=to_dict(agent_cfg.options),
                 encoder_hidden=agent_cfg.encoder_hidden, truncate_grad_each_step=agent_cfg.truncate_grad_each_step)


__all__ = ["Agent", "ImpalaCNN", "MLPEncoder", "make_encoder", "make_agent"]
