"""Everything that speaks OpenCode's side: its request shape, rendering, export, replay."""
