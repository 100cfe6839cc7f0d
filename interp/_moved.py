"""Old module paths of interp <= 0.1, kept importable: one table, resolved by an import hook.

``import interp.loading`` (or ``from interp.analyses.causal_tracing import causal_trace``) gives the
module at its new path, the very same module object, so monkeypatching either name patches both.
New code should import the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

MOVED: dict[str, str] = {
    "interp.builtin_models": "interp.models.builtin",
    "interp.loading": "interp.models.loading",
    "interp.gguf_header": "interp.models.gguf_header",
    "interp.hooks.architectures": "interp.models.architectures",
    "interp.hooks.coverage": "interp.models.coverage",
    "interp.probes": "interp.analyses.probes",
    "interp.needles": "interp.analyses.needles",
    "interp.validation": "interp.causal.checks",
    "interp.analyses.causal_common": "interp.causal.common",
    "interp.analyses.activation_patching": "interp.causal.patching",
    "interp.analyses.attribution_patching": "interp.causal.attribution",
    "interp.analyses.causal_tracing": "interp.causal.tracing",
    "interp.analyses.attention_knockout": "interp.causal.knockout",
    "interp.circuits.metrics": "interp.causal.metrics",
    "interp.circuits.report": "interp.report.circuit_report",
    "interp.report.html": "interp.report.scan_report",
    "interp.report.export": "interp.scanning.files",
    "interp.cli_common": "interp.cli.common",
    "interp.cli_causal": "interp.cli.causal",
    "interp.cli_circuit": "interp.cli.circuit",
    "interp.cli_report": "interp.cli.report",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old path of :data:`MOVED` and loads it as the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[int, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        self._specs[id(module)] = module.__spec__  # the import system sets the alias spec next
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs.pop(id(module))  # still the module at its new path


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, _Alias) for finder in sys.meta_path):
        sys.meta_path.append(_Alias())
