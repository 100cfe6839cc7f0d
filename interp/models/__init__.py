"""Models: loading (Hub names, local folders, GGUF files, built-in aliases) and where each architecture keeps its modules.

- :mod:`~interp.models.loading`: ``interp.load`` and the GGUF-to-HF conversion cache;
- :mod:`~interp.models.builtin`: the models interp fetches without the Hub (``smollm2-135m``, ``gemma3-270m``);
- :mod:`~interp.models.gguf_header`: a GGUF file checked from its header before any de-quantization;
- :mod:`~interp.models.architectures`: the one table of module paths (blocks, attention, MLP, norms);
- :mod:`~interp.models.coverage`: every model type of the installed transformers, tested or refused.

This ``__init__`` imports nothing, so that :mod:`interp.hooks` can read the architecture table while
:mod:`~interp.models.loading` builds on :mod:`interp.hooks` without an import cycle.
"""
