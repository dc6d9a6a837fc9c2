"""Development-time tools (not used by the pipeline): recording what OpenCode sends, to refresh lib/tools/data."""
