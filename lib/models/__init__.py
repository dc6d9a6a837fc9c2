"""Models: the embedded llama.cpp engine (its build and the proof that it runs here)."""
