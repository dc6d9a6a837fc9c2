"""Secret redaction: each kind is replaced, ordinary code is not, and nothing secret reaches data/."""
from __future__ import annotations

import json

import pytest

from helpers import load_json, make_project, read_jsonl, run_data_stages, run_stage, sample_files
from lib.redact import Redactor

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

# The fake secrets planted in the sample sessions (scripts/make_samples.py), by the kind that must catch them.
SAMPLE_SECRETS = {
    "openai_key": "sk-proj-EXAMPLEexampleEXAMPLEexample0123456789abcdefEXAMPLE",
    "bearer_token": "EXAMPLEtokenEXAMPLEtoken0000111122223333",
    "github_token": "ghp_EXAMPLE0123456789EXAMPLE0123456789ab",
    "aws_access_key": "AKIAIOSFODNN7EXAMPLE",
    "aws_secret_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "password": "hunter2secret",
    "private_key": "MIIEowIBAAKCAQEAEXAMPLEKEY",
}


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
