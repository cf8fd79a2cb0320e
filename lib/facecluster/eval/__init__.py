"""Accuracy harnesses and speed benchmarks."""
