"""Benchmarks: figures measured side by side in one run, printed as a table or JSON (never timed tests).

Each benchmark is one function returning a dataclass and one ``attnsearch bench`` command; the commands also write
the raw figures to ``results/benchmarks/<name>.json``.

- :func:`bench_executor`: scheduling overhead of the local executor and of Ray;
- :func:`bench_trainer`: ``train_model`` against a hand-written loop and a DataLoader pipeline;
- :func:`bench_overhead`: what a trial costs besides its training steps;
- :func:`bench_search`: compute the search needs to find a grid's best candidate, TPE against random search;
- :func:`bench_memory`: self-attention's memory and time as feature maps grow, against a naive version.
"""

from __future__ import annotations

from .executor import ExecutorBench, bench_executor
from .memory import MemoryBench, bench_memory
from .output import save_json
from .overhead import OverheadBench, bench_overhead
from .search import SearchBench, bench_search
from .trainer import TrainerBench, bench_trainer

__all__ = [
    "ExecutorBench",
    "MemoryBench",
    "OverheadBench",
    "SearchBench",
    "TrainerBench",
    "bench_executor",
    "bench_memory",
    "bench_overhead",
    "bench_search",
    "bench_trainer",
    "save_json",
]
