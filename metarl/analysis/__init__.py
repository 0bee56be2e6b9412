"""Tools that look inside trained models.

- :mod:`.dual_form`: a linear layer trained by (momentum) SGD as attention over its training patterns
  (Irie, Csordás & Schmidhuber, ICML 2022): record with :class:`DualFormRecorder`, read with
  :func:`load_record`, rebuild the output with :func:`dual_output`, look at the top patterns with
  :func:`spotlight`.
- :mod:`.fast_weights`: the same view for fast-weight layers (linear Transformer, DeltaNet): the output at
  step t as attention over the past steps of the sequence (:func:`fast_weight_attention`,
  :func:`core_attention`).
"""
from .dual_form import DualFormRecorder, LayerRecord, Spotlight, dual_output, load_record, pattern, spotlight
from .fast_weights import FastWeightAttention, core_attention, fast_weight_attention, mixer_attention

__all__ = [
    "DualFormRecorder", "LayerRecord", "load_record", "dual_output", "spotlight", "Spotlight", "pattern",
    "FastWeightAttention", "fast_weight_attention", "mixer_attention", "core_attention",
]
