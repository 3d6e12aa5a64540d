"""Benchmarks: `python -m videdit.bench NAME [options]`.

Each benchmark is a module `videdit.bench.<name>` with a `main(argv)` function. Every benchmark
times a baseline in the same run and prints ratios, so numbers compare across machines.
"""
