"""Models: the embedded llama.cpp engine (its build and the proof that it runs here), settings, reachability, the answer cache, the usage ledger, the accounted LM and tool calling. Must not import lib.program, lib.scoring, lib.opencode, lib.optimize, lib.export, lib.cli."""

import os

# LiteLLM fetches its price map from the network at import time unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# llama.cpp's OpenMP threads spin while they wait; beside any other busy process (a test server, a
# second stage) that spinning starves the work itself: passive waiting was 3x faster on 2 shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
