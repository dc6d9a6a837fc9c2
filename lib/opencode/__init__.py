"""OpenCode's side: the shipped agent and plugin, the prompt as OpenCode renders it, safety rules, replay of requests. Must not import lib.optimize, lib.export, lib.cli."""
