"""The benchmark suite: `make bench` (`python -m bench`), one module per benchmark.

Every figure is measured beside a baseline in the same run, over several repetitions (median).
"""
