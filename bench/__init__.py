"""Benchmarks of the engine against this machine's own limits (`nox -s bench`).

Each benchmark prints its figures and the ratio to a reference measured in the
same run, so the ratios hold on a busy machine. They are measurements, not tests:
nothing here passes or fails on a number.
"""
