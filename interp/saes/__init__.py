"""Sparse autoencoders and transcoders in SAELens' format (``interp.load_sae``).

``sae.py`` computes them, ``load.py`` reads SAELens' files and objects. Attaching one to a model is the
hooks engine's job (:mod:`interp.hooks.attachments`, ``model.attach_sae``); feature attribution lives in
:mod:`interp.saes.attribution` (``interp.feature_attribution``), which this package does not import so
that the hooks engine can read SAEs without importing the causal methods above it.
"""

from interp.saes.load import from_saelens, load_sae
from interp.saes.sae import SAE

__all__ = ["SAE", "from_saelens", "load_sae"]
