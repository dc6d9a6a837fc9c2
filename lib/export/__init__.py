"""Writing the files OpenCode reads (agent config, markdown agent, instructions, usage guide, plugin). Must not import lib.cli."""
