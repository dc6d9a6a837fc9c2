"""params.yaml, read and validated, and the user's own metric that it names. Must not import lib.data, lib.models, lib.program, lib.scoring, lib.opencode, lib.optimize, lib.export, lib.cli."""
