"""Benchmarks that print figures for this machine (never timed assertions in tests)."""
