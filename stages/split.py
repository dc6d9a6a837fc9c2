"""split: data/examples/examples.jsonl -> data/splits/{train,val,test}.jsonl (+ metrics/split.json)."""
from lib import params as P
from lib.errors import run_stage
from lib.files import atomic_open, write_json
from lib.split import SPLITS, assign, row_groups

EXAMPLES = "data/examples/examples.jsonl"


def main() -> None:
    d = P.load()["data"]
    ratios = {"train": d["train_split"], "val": d["val_split"], "test": d["test_split"]}
    # One pass reads each row's group and session; the second copies rows unchanged to their split.
    groups: list[str] = []
    sessions: list[str] = []
    ids: dict[str, str] = {}  # one string per id, however many rows share it
    with open(EXAMPLES, "rb") as fh:
        for line in fh:
            if line.strip():
                group, session = row_groups(line)
                groups.append(ids.setdefault(group, group))
                sessions.append(ids.setdefault(session, session))
    where = assign(groups, ratios, d["random_seed"])
    counts = {name: {"examples": 0, "sessions": set()} for name in SPLITS}
    with atomic_open("data/splits/train.jsonl", binary=True) as tr, \
            atomic_open("data/splits/val.jsonl", binary=True) as va, \
            atomic_open("data/splits/test.jsonl", binary=True) as te, open(EXAMPLES, "rb") as fh:
        out = {"train": tr, "val": va, "test": te}
        rows = (line for line in fh if line.strip())
        for line, group, session in zip(rows, groups, sessions):
            name = where[group]
            out[name].write(line if line.endswith(b"\n") else line + b"\n")
            counts[name]["examples"] += 1
            counts[name]["sessions"].add(session)
    report = {name: {"examples": c["examples"], "sessions": len(c["sessions"])} for name, c in counts.items()}
    write_json("metrics/split.json", report)
    print("split: " + ", ".join(f"{k} {v['examples']} examples / {v['sessions']} sessions" for k, v in report.items()))


if __name__ == "__main__":
    run_stage(main)
