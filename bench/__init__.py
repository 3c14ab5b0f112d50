"""Benchmarks of the upload services: `python -m bench [--quick] [--only AREA]`.

Each area module has ``run(workdir, quick) -> list[Section]``; nothing is
asserted, goals are only reported. Results go to bench/out/results.json.
"""
