"""split: data/examples/examples.jsonl -> data/splits/{train,val,test}.jsonl (+ metrics/split.json)."""
from lib import params as P
from lib.errors import run_stage
from lib.files import atomic_open, dumps, read_jsonl, write_json
from lib.split import SPLITS, assign

EXAMPLES = "data/examples/examples.jsonl"


def main() -> None:
    d = P.load()["data"]
    ratios = {"train": d["train_split"], "val": d["val_split"], "test": d["test_split"]}
    where = assign((row["group_id"] for row in read_jsonl(EXAMPLES)), ratios, d["random_seed"])
    counts = {name: {"examples": 0, "sessions": set()} for name in SPLITS}
    with atomic_open("data/splits/train.jsonl") as tr, atomic_open("data/splits/val.jsonl") as va, \
            atomic_open("data/splits/test.jsonl") as te:
        out = {"train": tr, "val": va, "test": te}
        for row in read_jsonl(EXAMPLES):
            name = where[row["group_id"]]
            out[name].write(dumps(row) + "\n")
            counts[name]["examples"] += 1
            counts[name]["sessions"].add(row["session_id"])
    report = {name: {"examples": c["examples"], "sessions": len(c["sessions"])} for name, c in counts.items()}
    write_json("metrics/split.json", report)
    print("split: " + ", ".join(f"{k} {v['examples']} examples / {v['sessions']} sessions" for k, v in report.items()))


if __name__ == "__main__":
    run_stage(main)
