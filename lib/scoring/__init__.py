"""Scoring a prediction against the logged step (metric) and a program over a split (evaluate). Must not import lib.opencode, lib.optimize, lib.export, lib.cli."""
