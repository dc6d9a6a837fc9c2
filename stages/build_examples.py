"""build_examples: data/parsed/sessions.jsonl -> data/examples/examples.jsonl (+ metrics/examples.json)."""
from collections import Counter

from lib import params as P
from lib.errors import UserError, run_stage
from lib.examples import Filters, build
from lib.files import read_jsonl, write_json, write_jsonl
from lib.session import Session
from lib.split import root_of

SESSIONS = "data/parsed/sessions.jsonl"


def main() -> None:
    d = P.load()["data"]
    parents = {row["id"]: row.get("parent_id") for row in read_jsonl(SESSIONS)}
    sessions = (Session.from_dict(row) for row in read_jsonl(SESSIONS))
    filters = Filters(d["require_success"], d["success_rule"], d["min_correctness"], d["min_efficiency"],
                      d["agent_filter"])
    tools: Counter[str] = Counter()

    def rows():
        for row in build(sessions, filters, d["granularity"], d["max_history_messages"], d["max_field_chars"]):
            row["group_id"] = root_of(parents, row["session_id"])
            tools[row["gold"]["next_action"]["tool"]] += 1
            yield row

    n = write_jsonl("data/examples/examples.jsonl", rows())
    report = {"examples": n, "granularity": d["granularity"], "filtered": dict(sorted(filters.removed.items())),
              "next_action_tools": dict(sorted(tools.items())), "notes": filters.notes()}
    write_json("metrics/examples.json", report)
    print(f"build_examples: {n} {d['granularity']} examples; filtered {report['filtered']}")
    for note in report["notes"]:
        print(f"note: {note}")
    if n < d["min_examples"]:
        raise UserError(f"only {n} examples survive the filters (data.min_examples = {d['min_examples']}); "
                        f"filtered: {report['filtered']}. Add session logs, or relax data.min_efficiency / "
                        f"data.require_success / data.agent_filter")


if __name__ == "__main__":
    run_stage(main)
