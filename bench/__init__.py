"""Benchmarks of the reconciler (issue 10): `python -m bench`. Not part of the test suite."""
