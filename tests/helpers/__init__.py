"""Test helpers (no tests here): the project root, the one config builder, numerics, small real scorers."""
