"""Learn better OpenCode agent prompts for small local models from session logs."""
