"""Vision on the cores: VQ-VAE with straight-through, EMA or Kohonen quantisers (``env=vqvae/<dataset>``)
and image classification of patch sequences through any core (``env=image/<dataset>``), over the image
datasets of :mod:`.data`. Importing this package registers the ``vqvae`` and ``image`` env schemas, their
tasks (on the engine loop, which draws their pictures at the end: ``Task.pictures``); ``env=vq_prior/<dataset>`` is a core as
the prior over a trained VQ-VAE's codes (:mod:`.vq_prior`)."""
from .data import DATASETS, ImageData, Split, load_dataset
from .image import ImageClassification, ImageConfig, PatchClassifier, patches
from .vqvae import VQVAE, Decoder, Encoder, VQVAEConfig, VQVAETask, save_grid
from .vq_prior import VQPrior, VQPriorConfig, encode_images, load_prior, load_vqvae, sample_codes

__all__ = ["DATASETS", "ImageData", "Split", "load_dataset", "ImageClassification", "ImageConfig",
           "PatchClassifier", "patches", "VQVAE", "Encoder", "Decoder", "VQVAEConfig", "VQVAETask", "save_grid",
           "VQPrior", "VQPriorConfig", "encode_images", "load_prior", "load_vqvae", "sample_codes"]
