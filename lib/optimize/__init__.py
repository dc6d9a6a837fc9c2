"""Choosing the program: the optimizers, and selection of candidates on val (offline or by replay). Must not import lib.export, lib.cli."""
