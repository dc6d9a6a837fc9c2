"""Compare lib.models.chat's parsers with llama.cpp's own code on random mixes of call pieces.

    python scripts/llama_cpp_chat/compare_random.py REF_HARNESS HERMES_HARNESS [SEED] [N]

The harnesses come from build.sh and build_hermes.sh. Prints the first mismatches of each rule and
the counts; a mismatch worth keeping goes into make_fixtures.py's REPLIES.
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lib.models import chat  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "llama_cpp_chat"
PIECES = ['<tool_call>', '<tool_call>\n', '\n</tool_call>', '</tool_call>',
          '{"name": "read", "arguments": {"filePath": "a.py"}}',
          '{"name": "bash", "arguments": {"command": "ls -la", "description": "x"}}', '{"name": "rm", "arguments": {}}',
          '```json\n', '```', '\n', ' ', 'Sure, ', 'text', '{', '}', '"', ',', '<function=read>', '</function>',
          '{"filePath": "b.py"}', '<tools>', '</tools>', '{"arguments": {}, "name": "read"}', '\\', 'null', '[1, 2]',
          '{"name": "read"', ', "arguments": ', '{"a": "x y"}', '<think>', '</think>', '<', 'true']


def main() -> None:
    ref, hermes = sys.argv[1], sys.argv[2]
    rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 300
    fixture = json.loads((FIXTURES / "parse.json").read_text(encoding="utf-8"))
    tools, template = fixture["tools"], FIXTURES / fixture["template"]
    bad = {"llama.cpp": 0, "hermes-2-pro": 0}
    seen: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp:
        request, reply = Path(tmp) / "req.json", Path(tmp) / "reply.txt"
        request.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}], "tools": tools}))
        for _ in range(n):
            text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
            if rng.random() < 0.4:
                text = text[:rng.randint(0, len(text))]
            if text in seen:
                continue
            seen.add(text)
            reply.write_text(text, encoding="utf-8")
            for rule, harness in (("llama.cpp", ref), ("hermes-2-pro", hermes)):
                out = subprocess.run([harness, str(template), str(request), "parse", str(reply)],
                                     capture_output=True, text=True).stdout
                expected, got = json.loads(out), chat.parse(text, tools, rule)
                if "error" in expected:
                    same = got.error and not got.calls
                else:
                    same = (not got.error and got.content == expected["content"]
                            and [(c.name, c.arguments) for c in got.calls]
                            == [(c["name"], c["arguments"]) for c in expected["tool_calls"]])
                if not same:
                    bad[rule] += 1
                    if bad[rule] <= 5:
                        print(f"{rule}: {text!r}\n  lib.models.chat: {got}\n  llama.cpp:       {expected}")
    print(f"{len(seen)} replies; mismatches: {bad}")


if __name__ == "__main__":
    main()
