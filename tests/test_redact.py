"""Secret redaction: each kind is replaced, ordinary code is not, and nothing secret reaches data/."""
from __future__ import annotations

import json

import pytest

from helpers import SAMPLE_SECRETS, load_json, make_project, read_jsonl, run_data_stages, run_stage, sample_files
from lib.data.redact import Redactor

# kind -> (text holding one secret of that kind, the text after redaction). All values are fake.
SECRETS = {
    "private_key": ("key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                    "-----END OPENSSH PRIVATE KEY-----\nafter",
                    "key:\n[REDACTED:private_key]\nafter"),
    "anthropic_key": ("ANTHROPIC=sk-ant-api03-EXAMPLEexampleEXAMPLE0123456789",
                      "ANTHROPIC=[REDACTED:anthropic_key]"),
    "openai_key": ("key sk-proj-EXAMPLEexampleEXAMPLEexample0123456789 here", "key [REDACTED:openai_key] here"),
    "github_token": ("git clone https://ghp_EXAMPLE0123456789EXAMPLE0123456789ab@github.com/x/y",
                     "git clone https://[REDACTED:github_token]@github.com/x/y"),
    "slack_token": ("SLACK xoxb-123456789012-EXAMPLEexample", "SLACK [REDACTED:slack_token]"),
    "aws_access_key": ("id AKIAIOSFODNN7EXAMPLE ok", "id [REDACTED:aws_access_key] ok"),
    "google_api_key": ("maps?key=AIzaSyEXAMPLEexampleEXAMPLEexample01234&x=1",
                       "maps?key=[REDACTED:google_api_key]&x=1"),
    "huggingface_token": ("HF hf_EXAMPLEexampleEXAMPLEexample0123456", "HF [REDACTED:huggingface_token]"),
    "stripe_key": ("stripe sk_live_EXAMPLEexampleEXAMPLE0123", "stripe [REDACTED:stripe_key]"),
    "jwt": ("cookie eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "cookie [REDACTED:jwt]"),
    "bearer_token": ('curl -H "Authorization: Bearer EXAMPLEtokenEXAMPLEtoken0000" http://x',
                     'curl -H "Authorization: Bearer [REDACTED:bearer_token]" http://x'),
    "password": ("mysql --password=hunter2secret -e", "mysql --password=[REDACTED:password] -e"),
    "aws_secret_key": ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       "aws_secret_access_key = [REDACTED:aws_secret_key]"),
}

# Code that names secrets without holding one.
ORDINARY = [
    "password: string",
    "self.token = token",
    "const apiKey = config.apiKey",
    "connect(host, password=password)",
    "const apiKey = process.env.KEY",
    "apiKey = process.env.KEY",
    "token_store.py",
    "from token_store import load_tokens",
    'password = os.environ["DB_PASSWORD"]',
    'api_key = os.getenv("OPENAI_API_KEY")',
    "token = get_token()",
    "const token = getToken()",
    'password = keyring.get_password("svc", user)',
    "API_KEY=${API_KEY}",
    "Authorization: Bearer ${TOKEN}",
    '"api_key": null',
    "max_tokens: 256",
    "def login(user, password):",
    "tokens = tokenize(text)",
    "secret_key = settings.SECRET_KEY",
    "task-1234567890abcdefghij",
    "export OPENAI_API_KEY=<your key>",
]

@pytest.mark.parametrize("kind", sorted(SECRETS))
def test_each_secret_kind_is_replaced_by_its_marker(kind):
    text, expected = SECRETS[kind]
    r = Redactor()
    assert r.text(text) == expected
    assert dict(r.counts) == {kind: 1}
    assert r.total == 1


@pytest.mark.parametrize("text, expected", [
    ("PASSWORD=changeme", "PASSWORD=[REDACTED:password]"),
    ('{"db_password": "s3cr3t-Value"}', '{"db_password": "[REDACTED:password]"}'),
    ("SECRET_TOKEN: abcd1234efgh", "SECRET_TOKEN: [REDACTED:password]"),
    ("export STRIPE_API_KEY='live1234abcd'", "export STRIPE_API_KEY='[REDACTED:password]'"),
])
def test_secret_assignments_keep_the_name_and_hide_the_value(text, expected):
    r = Redactor()
    assert r.text(text) == expected
    assert dict(r.counts) == {"password": 1}


def test_fine_grained_github_token_and_pem_without_end_marker():
    r = Redactor()
    pat = "github_pat_" + "EXAMPLE0123456789example0123456789"
    assert r.text(f"GH={pat}") == "GH=[REDACTED:github_token]"
    # A history entry cut to 500 characters can lose the END line: the rest of the text is the key.
    cut = r.text("cat id_rsa\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAEXAMPLEKEY")
    assert cut == "cat id_rsa\n[REDACTED:private_key]"
    assert r.counts == {"github_token": 1, "private_key": 1}


def test_a_key_in_an_assignment_is_counted_once_under_its_specific_kind():
    r = Redactor()
    out = r.text("export OPENAI_API_KEY=sk-proj-EXAMPLEexampleEXAMPLEexample0123456789 && python smoke.py")
    assert out == "export OPENAI_API_KEY=[REDACTED:openai_key] && python smoke.py"
    assert dict(r.counts) == {"openai_key": 1}


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_code_is_left_alone(text):
    r = Redactor()
    assert r.text(text) == text
    assert r.total == 0


def test_redacting_twice_changes_nothing_more():
    r = Redactor()
    once = r.text("\n".join(text for text, _ in SECRETS.values()))
    again = Redactor()
    assert again.text(once) == once
    assert again.total == 0
    assert r.total == len(SECRETS)


def test_nested_values_are_redacted_and_keys_kept():
    r = Redactor()
    value = {"password": "x", "args": {"command": "mysql --password=hunter2secret"},
             "list": ["AKIAIOSFODNN7EXAMPLE", 3, None, True]}
    out = r.value(value)
    assert out == {"password": "x", "args": {"command": "mysql --password=[REDACTED:password]"},
                   "list": ["[REDACTED:aws_access_key]", 3, None, True]}
    assert r.total == 2


def test_disabled_redactor_keeps_everything():
    r = Redactor(enabled=False)
    for text, _ in SECRETS.values():
        assert r.text(text) == text
    assert r.total == 0


@pytest.fixture(scope="module")
def redacted_run(tmp_path_factory):
    """The three data stages on the shipped sample sessions, with redaction on (the shipped default)."""
    project = make_project(tmp_path_factory.mktemp("redact-on"))
    run_data_stages(project)
    return project


def test_sample_sessions_do_hold_the_planted_secrets():
    raw = "\n".join(p.read_text(encoding="utf-8") for p in sample_files())
    for kind, secret in SAMPLE_SECRETS.items():
        assert secret in raw, f"sample data lost its {kind} secret; this test would prove nothing"


def test_no_secret_remains_anywhere_under_data(redacted_run):
    outputs = sorted(p for p in (redacted_run / "data").rglob("*") if p.is_file())
    names = {p.relative_to(redacted_run).as_posix() for p in outputs}
    assert {"data/parsed/sessions.jsonl", "data/examples/examples.jsonl", "data/splits/train.jsonl"} <= names
    for path in outputs:
        text = path.read_text(encoding="utf-8")
        for kind, secret in SAMPLE_SECRETS.items():
            assert secret not in text, f"{kind} secret left in {path.name}"
        assert "BEGIN RSA PRIVATE KEY" not in text
        probe = Redactor()
        probe.text(text)
        assert probe.total == 0, f"{path.name} still matches secret patterns: {dict(probe.counts)}"
    sessions = (redacted_run / "data/parsed/sessions.jsonl").read_text(encoding="utf-8")
    for kind in SAMPLE_SECRETS:
        assert f"[REDACTED:{kind}]" in sessions


def test_parse_metrics_count_the_redactions(redacted_run):
    report = json.loads((redacted_run / "metrics/parse.json").read_text(encoding="utf-8"))
    by_kind = report["redactions_by_kind"]
    assert set(SAMPLE_SECRETS) <= set(by_kind)
    assert all(n >= 1 for n in by_kind.values())
    assert report["redactions"] == sum(by_kind.values())
    markers = (redacted_run / "data/parsed/sessions.jsonl").read_text(encoding="utf-8").count("[REDACTED:")
    assert report["redactions"] == markers


def test_redact_false_keeps_the_secrets(tmp_path):
    project = make_project(tmp_path, redact=False)
    proc = run_stage(project, "parse")
    assert proc.returncode == 0, proc.stderr
    sessions = (project / "data/parsed/sessions.jsonl").read_text(encoding="utf-8")
    for secret in SAMPLE_SECRETS.values():
        assert secret in sessions
    assert "[REDACTED:" not in sessions
    report = load_json(project / "metrics/parse.json")
    assert report["redactions"] == 0
    assert report["redactions_by_kind"] == {}
    assert len(read_jsonl(project / "data/parsed/sessions.jsonl")) == report["sessions"]


# --- one pass: the same result as each pattern over the whole text, in order --------------------------------

def _reference_text(text: str, counts) -> str:
    """Redaction as the definition reads: every kind's pattern over the whole string, in order."""
    from lib.data import redact as R
    probe = Redactor()
    for kind in R._KINDS:
        text = kind.pattern.sub(lambda m, kind=kind: probe._replace(kind, m), text)
    counts.update(probe.counts)
    return text


def _corpus() -> list[str]:
    """Every string of the sample sessions and fixtures, the test texts, and real-sized bench sessions,
    plus variants with secrets, odd case and non-ASCII look-alikes planted in them."""
    import random
    from bench.sessions import plugin_dspy, plugin_raw, _Gen
    texts: list[str] = []

    def walk(v):
        if isinstance(v, str):
            texts.append(v)
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    for path in [*sample_files(), *sorted((ROOT_DIR / "tests" / "fixtures").rglob("*.json"))]:
        try:
            walk(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            pass
    for i in range(12):
        s = _Gen(i).session(i)
        walk(plugin_dspy(s) if i % 2 else plugin_raw(s))
    texts += [t for t, _ in SECRETS.values()] + ORDINARY
    rnd = random.Random(5)
    plants = [t for t, _ in SECRETS.values()] + ["API_KEY='abc12345'", "Token:  x1y2z3w4", "bearer abc", "pwd=abcd",
                                                 "SK-proj-EXAMPLEexampleEXAMPLEexample01", "toKen=K1234567",
                                                 "ſecret=abc12345", "apİ_key=abc12345", "SERVICE_KEY=zz99zz99",
                                                 "aws_secret_access_key\": \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"]
    for base in rnd.sample(texts, 400):
        cut = rnd.randint(0, len(base))
        texts.append(base[:cut] + rnd.choice(plants) + rnd.choice(["", "\n", " ", "\"", "'"]) + base[cut:])
    return texts


ROOT_DIR = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_fast_redaction_equals_running_each_pattern_in_turn():
    from collections import Counter
    texts = _corpus()
    assert len(texts) > 2000
    fast, slow = Redactor(), Counter()
    changed = 0
    for text in texts:
        expected = _reference_text(text, slow)
        assert fast.text(text) == expected, text[:200]
        changed += expected != text
    assert fast.counts == slow
    assert changed > 100  # the corpus does exercise the patterns


def test_json_line_equals_dumping_the_redacted_value():
    from lib.core.files import dumps
    from bench.sessions import plugin_dspy, plugin_raw, _Gen
    values = [load_json(p) for p in sample_files()]
    values += [plugin_dspy(_Gen(i).session(i)) for i in range(6)] + [plugin_raw(_Gen(i).session(i)) for i in range(6)]
    values.append({"args": {"password": "hunter2secretXYZ", "apiKey": 12345678, "token": None, "secret": "",
                            "credentials": {"user": "u", "pass": "p"}, "env": {"AWS_SECRET_ACCESS_KEY": "x" * 40},
                            "max_tokens": 256, "prompt_tokens": "1234 token=abcd1234"},
                   "text": "say \"password=s3cr3t-1\"\n\ttoken:\tabcd1234 é 日本 \u2028"})
    for value in values:
        slow, fast = Redactor(), Redactor()
        assert fast.json_line(dumps(value)) == dumps(slow.value(value))
        assert fast.counts == slow.counts


# --- a redacted value never spans a line break -----------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "    if not api_key:\n00063|         raise RuntimeError('no key')",
    "password:\n  - hunter2secret",
    "token =\n123456789",
    'secret: "\n  abcd1234"',
])
def test_a_redacted_value_never_spans_a_line_break(text):
    r = Redactor()
    assert r.text(text) == text
    assert r.total == 0


def test_code_read_with_line_numbers_keeps_them_around_a_secret():
    r = Redactor()
    text = ("<file>\n00062| def load():\n00063|     if not api_key:\n00064|         password = 'hunter2secret'\n"
            "00065| -----BEGIN RSA PRIVATE KEY-----\n00066| MIIEowIBAAKCAQEAEXAMPLEKEY\n"
            "00067| -----END RSA PRIVATE KEY-----\n00068| return\n</file>")
    out = r.text(text)
    assert out == ("<file>\n00062| def load():\n00063|     if not api_key:\n00064|         password = "
                   "'[REDACTED:password]'\n00065| [REDACTED:private_key]\n00066| \n00067| \n00068| return\n</file>")
    assert [line.split("|")[0] for line in out.splitlines()[1:-1]] == [f"{n:05d}" for n in range(62, 69)]
    assert r.counts == {"password": 1, "private_key": 1}


# --- values under a key that names a secret --------------------------------------------------------------------

@pytest.mark.parametrize("key", ["password", "passwd", "pwd", "secret", "token", "api_key", "apiKey", "API_KEY",
                                 "access_key", "accessKey", "private_key", "privateKey", "credentials",
                                 "Authorization", "authorization", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
                                 "CLIENT_SECRET", "x-api-key", "db_password", "refreshToken", "client_secret",
                                 "SERVICE_KEY", "passphrase"])
def test_keys_that_name_a_secret(key):
    from lib.data.redact import secret_key
    assert secret_key(key)


@pytest.mark.parametrize("key", ["passwordField", "max_tokens", "prompt_tokens", "token_count", "tokenizer",
                                 "secretName", "key", "primary_key", "sort_key", "keyboard", "apiKeyHeader",
                                 "description", "filePath", "command", "tokens", "author"])
def test_keys_that_only_mention_a_secret(key):
    from lib.data.redact import secret_key
    assert not secret_key(key)


@pytest.mark.parametrize("value, expected", [
    ({"password": "hunter2secretXYZ"}, {"password": "[REDACTED:password]"}),
    ({"apiKey": "abcd1234efgh5678"}, {"apiKey": "[REDACTED:password]"}),
    ({"env": {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}},
     {"env": {"AWS_SECRET_ACCESS_KEY": "[REDACTED:password]"}}),
    ({"token": 12345678}, {"token": "[REDACTED:password]"}),
    ({"credentials": {"user": "bob", "password": "x"}}, {"credentials": "[REDACTED:password]"}),
    ({"secrets": ["a"], "client_secret": ["s3cr3t", "other"]}, {"secrets": ["a"], "client_secret": "[REDACTED:password]"}),
    ({"apiKey": "sk-proj-EXAMPLEexampleEXAMPLEexample0123456789"}, {"apiKey": "[REDACTED:openai_key]"}),
    ({"Authorization": "Bearer EXAMPLEtokenEXAMPLEtoken0000"}, {"Authorization": "[REDACTED:password]"}),
    # nothing to hide: empty, null, a flag, a reference to where the secret lives
    ({"password": "", "token": None, "secret": True, "apiKey": "${API_KEY}", "GITHUB_TOKEN": "{env:GITHUB_TOKEN}"},
     {"password": "", "token": None, "secret": True, "apiKey": "${API_KEY}", "GITHUB_TOKEN": "{env:GITHUB_TOKEN}"}),
    ({"passwordField": "string", "max_tokens": 256}, {"passwordField": "string", "max_tokens": 256}),
])
def test_a_value_under_a_secret_key_is_redacted_whatever_its_shape(value, expected):
    r = Redactor()
    assert r.value(value) == expected
    assert r.total == json.dumps(expected).count("[REDACTED:")
    again = Redactor()
    assert again.value(expected) == expected and again.total == 0
