"""Learn better OpenCode agent prompts for small local models from session logs.

Packages, lowest first (each imports only those below it; see its docstring): core, charts,
tools, config, data, models, program, scoring, opencode, optimize, export. lib.cli is the
command line over all of them.
"""
