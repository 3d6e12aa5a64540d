"""Benchmarks (outside the installed package): `python -m benchmarks NAME [options]` from the
repository root, or `python benchmarks/NAME.py [options]` from anywhere.

Each benchmark is a module `benchmarks.<name>` with a `main(argv)` function; `benchmarks.common` holds
what they share. Every benchmark times a baseline in the same run and prints ratios, so numbers
compare across machines.
"""
