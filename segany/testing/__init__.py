"""Helpers for checking segany against the official `segment-anything` package (tests, benchmarks)."""
