"""Benchmarks (not tests): the pipeline against the course pipeline and its own frameworks.

Run ``make bench`` (or ``python -m bench``); results go to ``bench/results/``.
"""
