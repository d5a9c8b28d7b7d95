"""Benchmarks. Run each as a module from the repository root: ``python -m bench.speed``, ``python -m bench.cmrc``…

Shared helpers: ``bench.common`` (child RSS, worker processes, stats, machine facts, BENCHMARKS.md
sections) and ``bench.cmrc_data`` (the CMRC 2018 loaders and corpus writer).
"""
