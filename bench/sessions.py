"""Real-sized synthetic session logs for the data-stage benchmarks.

Real plugin logs average about 32 KB a session (10,000 took 325 MB): most of it is tool output
(files read with OpenCode's `00042| ` line numbers, command output, search hits) and the
conversation history repeated in every turn. The shipped samples are 2-14 KB, so copies of them
would measure the wrong thing. This module writes sessions of that shape, deterministically from
a seed: both plugin formats (`dspy-*.json`, `session-*.json`), 1-6 turns, 3-14 tool calls a
turn, source code that mentions tokens, passwords and keys the way real code does, and now and
then a planted (fake) secret in text or in structured tool arguments.
"""
from __future__ import annotations

import datetime as _dt
import json
import random
import re
import string
from pathlib import Path
from typing import Any

_PROJECTS = ["/home/dev/projects/invoice-api", "/home/dev/projects/slack-notifier", "/home/dev/src/web-shop",
             "/home/dev/work/data-tools", "/home/dev/projects/invoice-api-old", "/srv/repos/auth-service"]
_MODELS = ["anthropic/claude-sonnet-4-5", "openai/gpt-4o", "opencode/claude-sonnet-4-5", "ollama/qwen2.5-coder:7b"]
_TASKS = ["Fix the KeyError in load_settings when {x} is unset", "Add a /healthz endpoint to {f}",
          "Refactor {f} so the retry logic lives in one place", "Write tests for {f}",
          "Why does {f} fail on an empty config?", "Rename {x} to something clearer across the project",
          "Remove the unused helpers from {f}", "Make the token refresh in {f} thread-safe"]

# Lines of code as they appear in real projects: many mention secrets without holding one.
_PY = ["def load_settings(env):", "    timeout = int(env.get(\"TIMEOUT\", 30))", "    api_key = os.getenv(\"API_KEY\")",
       "    if not api_key:", "        raise RuntimeError(\"API_KEY is not set\")", "class TokenStore:",
       "    def __init__(self, path: str) -> None:", "        self.path = path", "        self.token = None",
       "    def refresh(self, client):", "        self.token = client.fetch_token(scope=\"read\")",
       "        return self.token", "import json", "import os", "from typing import Any",
       "def connect(host, user, password=None):", "    return Client(host=host, user=user, password=password)",
       "    for row in rows:", "        total += row[\"amount\"] * row[\"qty\"]", "    return {\"ok\": True}",
       "# secret_key comes from the settings module", "SECRET_KEY = settings.SECRET_KEY", "",
       "    logger.info(\"loaded %d rows\", len(rows))", "    except ValueError as exc:",
       "        raise ConfigError(f\"bad value: {exc}\") from None", "def tokenize(text):",
       "    return [t for t in text.split() if t]", "    max_tokens = 256", "@app.get(\"/invoices/{id}\")",
       "async def get_invoice(id: int, db=Depends(get_db)):", "    invoice = await db.fetch_one(query, id)"]
_JS = ["const express = require('express');", "const app = express();", "const apiKey = process.env.API_KEY;",
       "export function formatMessage(msg: Message): string {", "  return `${msg.user}: ${msg.text}`;", "}",
       "  const token = await getToken();", "  if (!token) throw new Error('no token');",
       "app.get('/healthz', (req, res) => res.json({ ok: true }));", "module.exports = { app };",
       "interface Config { apiKey: string; passwordField: string; retries: number }",
       "  headers: { Authorization: `Bearer ${token}` },", "  for (const item of items) {",
       "    total += item.price * item.qty;", "  }", "test('formats a message', () => {",
       "  expect(formatMessage({ user: 'a', text: 'b' })).toBe('a: b');", "});", ""]
_NOTES = ["I'll read {f} first to see how it is structured.", "The failing line is in {f}; let me check the caller.",
          "Running the tests to confirm the fix.", "Done. The change is in {f} and the tests pass.",
          "I've completed the refactor; {f} now has a single retry helper.", "Let me search for other uses."]
_FILES = ["src/config.py", "src/app.py", "lib/format.js", "src/token_store.py", "index.js", "tests/test_api.py",
          "src/invoice_api/db.py", "src/routes/health.ts", "lib/retry.js", "README.md"]

_SENSITIVE = re.compile(r"(?i)token|passw|secret|api_?key|authorization")

# Fake secrets, planted now and then (a real history has a few).
_SECRETS_TEXT = ["export OPENAI_API_KEY=sk-proj-EXAMPLEexampleEXAMPLEexample0123456789",
                 "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                 "git clone https://ghp_EXAMPLE0123456789EXAMPLE0123456789ab@github.com/x/y",
                 "mysql --password=hunter2secret -e 'select 1'",
                 "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAEXAMPLEKEY\n-----END RSA PRIVATE KEY-----"]
_SECRETS_ARGS = [{"password": "hunter2secretXYZ"}, {"apiKey": "abcd1234efgh5678"},
                 {"env": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}}]


# pool -> (lines naming no secret, lines naming one)
_SPLIT = {id(pool): ([x for x in pool if not _SENSITIVE.search(x)], [x for x in pool if _SENSITIVE.search(x)])
          for pool in (_PY, _JS)}


def _iso(ms: int) -> str:
    return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _rid(rnd: random.Random, n: int) -> str:
    return "".join(rnd.choices(string.ascii_letters + string.digits, k=n))


class _Gen:
    def __init__(self, seed: int) -> None:
        self.rnd = random.Random(seed)

    def line(self, pool: list[str]) -> str:
        """A line of code: about one in twenty names a secret (token, password, api key), as in code
        that does auth."""
        return self.rnd.choice(_SPLIT[id(pool)][self.rnd.random() < 0.05])

    def code(self, lines: int) -> str:
        pool = _PY if self.rnd.random() < 0.6 else _JS
        start = self.rnd.randint(1, 200)
        body = [f"{start + i:05d}| {self.line(pool)}" for i in range(lines)]
        return "<file>\n" + "\n".join(body) + f"\n\n(File has more lines. Use 'offset' to read beyond line " \
                                              f"{start + lines})\n</file>"

    def action(self, tool: str, directory: str, secret: bool) -> tuple[dict[str, Any], str]:
        r = self.rnd
        f = f"{directory}/{r.choice(_FILES)}"
        if tool == "read":
            return {"filePath": f}, self.code(r.choice([12, 25, 35, 50, 65, 100]))
        if tool == "bash":
            cmd = r.choice(["pytest -q", "npm test", "git status", "ls -la src", "python -m mypy src"])
            out = "\n".join(f"{r.choice(['PASSED', 'ok', 'modified:', 'drwxr-xr-x'])} {r.choice(_FILES)} "
                            f"{_rid(r, 12)}" for _ in range(r.randint(4, 30)))
            if secret:
                out += "\n" + r.choice(_SECRETS_TEXT)
            return {"command": cmd, "description": "Run " + cmd.split()[0]}, out
        if tool == "grep":
            hits = "\n".join(f"{directory}/{r.choice(_FILES)}:\n  Line {r.randint(1, 400)}: {self.line(_PY if r.random() < 0.6 else _JS)}"
                             for _ in range(r.randint(3, 20)))
            return {"pattern": r.choice(["token", "api_key", "def load", "retry"]), "include": "*.py"}, hits
        if tool == "edit":
            old = "\n".join(self.line(_PY) for _ in range(r.randint(2, 12)))
            new = "\n".join(self.line(_PY) for _ in range(r.randint(2, 14)))
            return {"filePath": f, "oldString": old, "newString": new}, ""
        if tool == "write":
            return {"filePath": f, "content": "\n".join(self.line(_JS) for _ in range(r.randint(10, 80)))}, ""
        if tool == "glob":
            return {"pattern": "**/*.py"}, "\n".join(f"{directory}/{r.choice(_FILES)}" for _ in range(r.randint(3, 30)))
        if tool == "todowrite":
            todos = [{"content": r.choice(_TASKS).format(x="X", f="f"), "status": "pending", "priority": "high",
                      "id": str(i)} for i in range(r.randint(2, 6))]
            return {"todos": todos}, json.dumps(todos, indent=2)
        if tool == "mcp_db_query":  # an MCP tool: arguments are whatever the server defines
            args: dict[str, Any] = {"query": "select * from invoices limit 5"}
            if secret:
                args.update(r.choice(_SECRETS_ARGS))
            return args, "[]"
        return {"path": directory}, "\n".join(r.choice(_FILES) for _ in range(r.randint(3, 20)))

    def session(self, index: int) -> dict[str, Any]:
        """One session as neutral turns: (task, [(tool, args, result, ms)], reply, start, end)."""
        r = self.rnd
        directory = r.choice(_PROJECTS)
        start = 1_735_000_000_000 + index * 3_600_000 + r.randint(0, 3_000_000)
        sid = f"ses_{start:x}{_rid(r, 14)}"
        secret = r.random() < 0.05
        turns = []
        t = start
        for _ in range(r.choice([1, 1, 2, 2, 3, 3, 4, 6])):
            task = r.choice(_TASKS).format(x=r.choice(["INVOICE_TIMEOUT", "retry_count", "apiKey"]),
                                           f=r.choice(_FILES))
            calls = []
            t0 = t
            for _ in range(r.randint(3, 11)):
                tool = r.choices(["read", "bash", "grep", "edit", "write", "glob", "todowrite", "list",
                                  "mcp_db_query"], weights=[30, 20, 10, 15, 4, 5, 5, 5, 6])[0]
                args, result = self.action(tool, directory, secret and r.random() < 0.3)
                t += r.randint(500, 9000)
                calls.append((tool, args, result, t))
            t += r.randint(1000, 20000)
            reply = r.choice(_NOTES).format(f=r.choice(_FILES))
            turns.append((task, calls, reply, t0, t))
            t += r.randint(5000, 600000)
        return {"id": sid, "directory": directory, "turns": turns, "model": r.choice(_MODELS)}


def plugin_dspy(s: dict[str, Any]) -> dict[str, Any]:
    """The session as the plugin's dspy-<id>.json (current variant)."""
    examples, history, step = [], [], 0
    for task, calls, reply, t0, t1 in s["turns"]:
        actions = []
        for tool, args, result, ms in calls:
            step += 1
            actions.append({"step": step, "tool": tool, "callID": f"toolu_{step:04d}{s['id'][-10:]}", "args": args,
                            "timestamp": _iso(ms), "result": result, "success": "error" not in result.lower()})
        n = len(calls)
        examples.append({
            "input": {"task": task, "context": {"workingDirectory": s["directory"], "relevantFiles": _FILES[:6],
                                                "lspDiagnostics": {"errors": [], "warnings": []}, "fileCount": 1187},
                      "conversationHistory": list(history)},
            "actions": actions,
            "output": {"response": reply, "finalMessage": f"msg_{t1:x}"},
            "outcome": {"success": True, "taskCompleted": True,
                        "metrics": {"lspErrorsCleared": False, "filesModified": 1, "timeToCompletion": (t1 - t0) / 1000,
                                    "toolCallCount": n, "tokenCost": {"input": 1200 * n, "output": 90 * n,
                                                                      "cache": {"read": 9000, "write": 0}},
                                    "cacheHitRate": 0.5},
                        "evaluation": {"correctness": 1, "efficiency": min(1.0, 3 / n), "minimalEdits": 1}},
            "agent": {"name": "build", "model": s["model"], "temperature": 0, "promptTokens": 1200,
                      "completionTokens": 90},
            "metadata": {"timestamp": _iso(t1), "sessionId": s["id"], "duration": (t1 - t0) / 1000,
                         "messageCount": 2 + n},
        })
        history.append({"role": "user", "content": task[:500], "timestamp": _iso(t0)})
        # Real histories carry the assistant's text of earlier turns, file dumps included.
        dump = calls[0][2][:400] if calls[0][0] == "read" else ""
        history.append({"role": "assistant", "content": (reply + "\n" + dump)[:500], "timestamp": _iso(t1)})
    total = sum(len(ex["actions"]) for ex in examples)
    return {"session": s["id"], "generated": _iso(s["turns"][-1][4]), "totalExamples": len(examples),
            "totalTurns": len(examples), "successfulTurns": len(examples), "overallSuccess": True,
            "totalToolCalls": total, "examples": examples}


def plugin_raw(s: dict[str, Any]) -> dict[str, Any]:
    """The session as the plugin's raw session-<id>.json: text messages plus one tool-call list."""
    messages, calls, step = [], [], 0
    provider, model = s["model"].split("/", 1)
    for n, (task, turn_calls, reply, t0, t1) in enumerate(s["turns"]):
        uid, aid = f"msg_{t0:x}{n:02d}u", f"msg_{t1:x}{n:02d}a"
        user = {"messageId": uid, "role": "user", "timestamp": _iso(t0 + 150), "content": task,
                "info": {"id": uid, "sessionID": s["id"], "role": "user", "time": {"created": t0},
                         "agent": "build", "model": {"providerID": provider, "modelID": model}}}
        reply_text = reply + "\n\n" + "\n".join(c[2][:300] for c in turn_calls[:2])
        assistant = {"messageId": aid, "role": "assistant", "timestamp": _iso(t1), "content": reply_text,
                     "info": {"id": aid, "sessionID": s["id"], "role": "assistant",
                              "time": {"created": t0 + 400, "completed": t1}, "parentID": uid,
                              "modelID": model, "providerID": provider, "mode": "build",
                              "path": {"cwd": s["directory"], "root": s["directory"]}, "cost": 0.01,
                              "tokens": {"input": 1200, "output": 90, "reasoning": 0,
                                         "cache": {"read": 9000, "write": 0}}, "finish": "stop"}}
        messages += [assistant, user] if n == 0 else [user, assistant]  # arrival order, as the plugin saves it
        for tool, args, result, ms in turn_calls:
            step += 1
            calls.append({"step": step, "tool": tool, "callID": f"toolu_{step:04d}{s['id'][-10:]}", "args": args,
                          "timestamp": _iso(ms), "result": result, "success": "error" not in result.lower()})
    return {"sessionId": s["id"], "messages": messages, "toolCalls": calls,
            "context": {"workingDirectory": s["directory"], "relevantFiles": [],
                        "lspDiagnostics": {"errors": [], "warnings": []}, "fileCount": 1187},
            "initialLspDiagnostics": {"errors": [], "warnings": []},
            "startTime": s["turns"][0][3], "lastUpdateTime": s["turns"][-1][4], "updateCount": 5 * len(messages)}


def write_logs(dest: Path, n: int, seed: int = 7) -> int:
    """n real-sized plugin sessions under dest (two in three dspy-*.json, the rest session-*.json); bytes written."""
    size = 0
    for i in range(n):
        s = _Gen(seed * 1_000_003 + i).session(i)
        raw = i % 3 == 2
        data = plugin_raw(s) if raw else plugin_dspy(s)
        path = dest / f"{i // 1000:03d}" / (f"session-{s['id']}.json" if raw else f"dspy-{s['id']}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=2, ensure_ascii=False)  # the plugin pretty-prints with 2 spaces
        path.write_text(text, encoding="utf-8")
        size += len(text.encode("utf-8"))
    return size
