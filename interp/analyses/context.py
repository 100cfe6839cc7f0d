"""What a scan hands each analysis: the model, the probes, the settings, and shared statistics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from interp.analyses.head_stats import head_stat_means
from interp.hooks import HookedModel
from interp.kernels import StatsConfig
from interp.analyses.probes import Probe
from interp.analyses.split import split_rows
from interp.settings import ScanSettings

__all__ = ["ScanContext", "ScanSettings"]


@dataclass
class ScanContext:
    """Passed to every analysis. ``head_means(probe)`` runs one statistics pass per probe and caches it;
    long analyses call ``progress(done, total)`` so the CLI can show a bar for them."""

    model: HookedModel
    probes: dict[str, Probe]
    settings: ScanSettings
    progress: Callable[[int, int], None] = lambda done, total: None  # steps within the running analysis
    _means: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def head_means(self, probe: str) -> dict[str, torch.Tensor]:
        """``{statistic: [layer, head]}`` on ``probe``, computed once (see :func:`head_stat_means`).

        Under torchrun each rank runs its share of the probe's rows (:func:`~interp.analyses.split.split_rows`).
        """
        if probe not in self._means:
            config = StatsConfig(n_sink=self.settings.n_sink, window=self.settings.window, received=True)
            tokens = self.probes[probe].tokens
            self._means[probe] = split_rows(
                len(tokens),
                lambda rows: head_stat_means(self.model, tokens[rows.start:rows.stop], config, backend=self.settings.backend),
                {"alpha": 1},  # [layer, batch, head, key]: per row
            )
        return self._means[probe]
