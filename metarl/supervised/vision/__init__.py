"""Vision on the cores: VQ-VAE with straight-through, EMA or Kohonen quantisers (``env=vqvae/<dataset>``)
and image classification of patch sequences through any core (``env=image/<dataset>``), over the image
datasets of :mod:`.data`. Importing this package registers the ``vqvae`` and ``image`` env schemas, their
tasks and the ``vision`` trainer (the engine loop, then the pictures)."""
from .data import DATASETS, ImageData, Split, load_dataset
from .image import ImageClassification, ImageConfig, PatchClassifier, patches
from .vqvae import VQVAE, Decoder, Encoder, VQVAEConfig, VQVAETask, save_grid

__all__ = ["DATASETS", "ImageData", "Split", "load_dataset", "ImageClassification", "ImageConfig",
           "PatchClassifier", "patches", "VQVAE", "Encoder", "Decoder", "VQVAEConfig", "VQVAETask", "save_grid"]
