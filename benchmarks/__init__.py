"""Benchmarks: speed, memory and scale, each against a baseline doing the same work in the same
run. Run from the repository root with the virtualenv's python (``python -m benchmarks.vql``);
not part of the installed package."""
