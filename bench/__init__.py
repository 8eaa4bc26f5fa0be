"""tr2m-bench: speed, memory and agreement of every backend, the video loop and keyframe mode.

    tr2m-bench --preset paper --size 434x560 --bundle bundles/paper --batch 2 --repeats 3

Python: ``from bench import BenchConfig, run_benchmark``. Results and the optimization log are in
bench/RESULTS.md. Every backend row runs in a fresh worker process (bench.worker) so its peak
memory is its own.
"""
from .run import BenchConfig, run_benchmark

__all__ = ["BenchConfig", "run_benchmark"]
