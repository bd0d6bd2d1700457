"""What every trial of a run shares beyond its candidate: the constraints it must meet and how it is judged.

:class:`Constraints` is the one definition of the space file's ``search.constraints`` section (derived from it by
:func:`attnsearch.schema.section_model`) and of what the worker checks. :class:`TrialSettings` travels with every
job to a worker, local or on Ray. Neither is part of a :class:`~attnsearch.candidate.Candidate`: two runs that judge
the same candidate differently still train the same network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import Field, with_config

from ..schema import STRICT

__all__ = ["Constraints", "TrialSettings"]

PositiveFloat = Annotated[float, Field(gt=0)]


@with_config(STRICT)
@dataclass(frozen=True)
class Constraints:
    """Limits checked from a candidate's costs before it trains; one it breaks is recorded ``infeasible``.

    Example:
        >>> Constraints(max_params=5e6).broken({"params": 6_000_000, "flops": 1e9})
        'params 6e+06 > max_params 5e+06'
    """

    max_params: PositiveFloat | None = None  # parameters
    max_flops: PositiveFloat | None = None  # FLOPs of one forward pass at batch 1 (a multiply-add counts 2)
    max_latency_ms: PositiveFloat | None = None  # ms of one forward pass at batch 1, on the trial's device

    def broken(self, costs: dict[str, Any]) -> str | None:
        """Why ``costs`` (params, flops, latency_ms; those measured) break a limit, or None when they do not."""
        for key, limit, name in (
            ("params", self.max_params, "max_params"),
            ("flops", self.max_flops, "max_flops"),
            ("latency_ms", self.max_latency_ms, "max_latency_ms"),
        ):
            if limit is not None and costs.get(key) is not None and costs[key] > limit:
                return f"{key} {costs[key]:.4g} > {name} {limit:.4g}"
        return None


@dataclass(frozen=True)
class TrialSettings:
    """How every trial of a run is trained and judged, beyond its candidate."""

    constraints: Constraints = field(default_factory=Constraints)
    repeats: int = 1  # seeds per candidate, scores averaged
    threads: int | None = None  # torch threads per trial
    keep_weights: bool = False  # send the trained weights back
    # the first epoch scored on validation (epochs before it, never the last, skip the pass: no pruner looks at
    # them); 1 = every epoch. See SearchSpace.first_val_epoch
    first_val_epoch: int = 1
    plugins: tuple[str, ...] = ()  # plug-ins (attnsearch.plugins.plugin_specs) a worker loads before anything else
