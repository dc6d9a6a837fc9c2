"""build_examples: data/parsed/sessions.jsonl -> data/examples/examples.jsonl (+ metrics/examples.json)."""
from lib.config import params as P
from lib.core.errors import UserError, run_stage
from lib.data.build_examples import build_file
from lib.data.examples import Filters
from lib.core.files import write_json

SESSIONS = "data/parsed/sessions.jsonl"


def main() -> None:
    d = P.load()["data"]
    filters = Filters(d["require_success"], d["success_rule"], d["min_correctness"], d["min_efficiency"],
                      d["agent_filter"])
    built = build_file(SESSIONS, "data/examples/examples.jsonl", filters, d["granularity"],
                       d["max_history_messages"], d["max_field_chars"])
    n = built.examples
    report = {"examples": n, "granularity": d["granularity"], "filtered": dict(sorted(filters.removed.items())),
              "next_action_tools": dict(sorted(built.tools.items())), "notes": filters.notes()}
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
