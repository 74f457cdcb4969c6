"""smallcap's benchmark runner: `python -m benchmarks [name ...]` prints one JSON line per figure.

Every figure is a ratio against a reference measured in the same run, so noisy machines still give
comparable numbers. Benchmarks live in modules of this package that define `run(rounds) -> Iterator[dict]`.
"""
