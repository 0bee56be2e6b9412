"""``metarl.cores.from_config``: the builder every user calls, from a DictConfig, a dict or a dataclass."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import metarl.configs
from metarl import cores
from metarl.config import AgentConfig

AGENT_DIR = Path(metarl.configs.__path__[0]) / "agent"


def agent_config(name: str):
    """``cfg.agent`` as a run sees it: the YAML of ``agent=<name>`` on the AgentConfig schema."""
    values = OmegaConf.load(AGENT_DIR / f"{name}.yaml")
    values.pop("defaults", None)
    return OmegaConf.merge(OmegaConf.structured(AgentConfig), values)


def test_srwm_yaml_builds_the_same_core_as_make():
    cfg = agent_config("srwm")
    assert cfg.encoder_hidden == 64  # an RL agent's key, present in cfg.agent and ignored by the core
    torch.manual_seed(0)
    core = cores.from_config(cfg)
    torch.manual_seed(0)
    reference = cores.make(
        "srwm", d_model=128, num_layers=2, num_heads=8, ff="dense", d_ff=512, dropout=0.0, ff_options={},
        d_head=16, beta_init=-1.0,
    )
    assert cores.count_parameters(core) == cores.count_parameters(reference)
    for (name, p), (_, q) in zip(core.named_parameters(), reference.named_parameters()):
        assert torch.equal(p, q), name


def test_dict_and_dataclass_give_the_same_core():
    plain = {"name": "delta", "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32,
             "options": {"chunk_size": 4}, "truncate_grad_each_step": True}
    from_dict = cores.from_config(plain)
    from_dataclass = cores.from_config(AgentConfig(**plain))
    from_dictconfig = cores.from_config(OmegaConf.create(plain))
    counts = {cores.count_parameters(c) for c in (from_dict, from_dataclass, from_dictconfig)}
    assert len(counts) == 1
    assert from_dict.blocks[0].mixer.chunk_size == 4


def test_ff_options_reach_the_feed_forward():
    cfg = OmegaConf.merge(OmegaConf.structured(AgentConfig), {
        "name": "mlp", "d_model": 16, "num_layers": 1, "ff": "moe",
        "ff_options": {"num_experts": 4, "expert_size": 8, "top_k": 2},
    })
    core = cores.from_config(cfg)
    assert core.blocks[0].ff.num_experts == 4


def test_unknown_core_lists_the_names():
    cfg = OmegaConf.merge(OmegaConf.structured(AgentConfig), {"name": "nope"})
    with pytest.raises(ValueError, match="'nope'.*known cores: " + ", ".join(cores.names())):
        cores.from_config(cfg)


def test_bad_keys():
    with pytest.raises(ValueError, match="unknown agent key.*'num_layer'"):
        cores.from_config({"name": "lstm", "d_model": 8, "num_layer": 3})
    with pytest.raises(ValueError, match="'d_model'"):
        cores.from_config({"name": "lstm"})


def test_options_by_core_merge_under_options_for_the_matching_core():
    base = {"name": "srwm", "d_model": 16, "num_layers": 1, "num_heads": 2, "d_ff": 32,
            "options_by_core": {"srwm": {"d_head": 8, "input_softmax": True, "norm": "none"},
                                "lt": {"sum_normalise": False}}}
    mixer = cores.from_config(base).blocks[0].mixer
    assert mixer.d_head == 8 and mixer.input_softmax and mixer.norm_position == "none"
    # agent.options wins over the preset, key by key
    mixer = cores.from_config({**base, "options": {"norm": "pre"}}).blocks[0].mixer
    assert mixer.norm_position == "pre" and mixer.input_softmax and mixer.d_head == 8
    # another core takes only its own entry: the srwm options never reach the LT or the LSTM
    assert cores.from_config({**base, "name": "lt"}).blocks[0].mixer.sum_normalise is False
    assert cores.from_config({**base, "name": "lstm"}).name == "lstm"


def test_options_by_core_in_a_structured_config():
    cfg = OmegaConf.merge(agent_config("srwm"), {"options_by_core": {"srwm": {"beta_init": 0.0}}})
    torch.manual_seed(0)
    assert abs(cores.from_config(cfg).blocks[0].mixer.wb.mean().item()) < 0.1
    cfg = OmegaConf.merge(cfg, {"options": {"beta_init": -1.0}})
    assert cores.from_config(cfg).blocks[0].mixer.wb.mean().item() < -0.8


def test_options_by_core_names_must_be_cores():
    with pytest.raises(ValueError, match="options_by_core.*'srmw'.*known cores"):
        cores.from_config({"name": "lstm", "d_model": 8, "options_by_core": {"srmw": {"d_head": 4}}})
    with pytest.raises(ValueError, match="options_by_core must map"):
        cores.from_config({"name": "lstm", "d_model": 8, "options_by_core": {"srwm": 3}})
