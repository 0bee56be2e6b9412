"""Parameterised blocks that are not cores (they import only :mod:`metarl.ops`, never :mod:`metarl.cores`).

- :mod:`.feedforward`: the feed-forward sublayers, ``x [..., D] -> [..., D]``: dense, σ-MoE, product-key
  memory (``make_feedforward(kind, d_model, d_ff, dropout, **options)``).
- :mod:`.positional`: positional encodings of the softmax-attention core (sinusoidal, rotary, ALiBi).
- :mod:`.feature_maps`: positive feature maps of the fast-weight cores (ELU+1, DPFP, sum normalisation).
"""
from .feature_maps import dpfp, elu_p1, sum_norm
from .feedforward import (
    FEEDFORWARDS,
    DenseFF,
    ProductKeyMemory,
    SigmaMoE,
    ff_parameter_count,
    make_feedforward,
    match_moe_to_dense,
)
from .positional import POSITIONAL, alibi_slopes, rotary, sinusoidal_encoding

__all__ = [
    "DenseFF", "SigmaMoE", "ProductKeyMemory", "FEEDFORWARDS", "make_feedforward", "ff_parameter_count",
    "match_moe_to_dense", "sinusoidal_encoding", "rotary", "alibi_slopes", "POSITIONAL",
    "elu_p1", "dpfp", "sum_norm",
]
