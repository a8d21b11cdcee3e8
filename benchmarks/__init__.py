"""Benchmarks for the issue "Fast at every scale": `python -m benchmarks.run [--smoke]`."""
