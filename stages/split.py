"""split: data/examples/examples.jsonl -> data/splits/{train,val,test}.jsonl (+ metrics/split.json)."""
from lib.config import params as P
from lib.core.errors import run_stage
from lib.core.files import write_json
from lib.data.split import SPLITS, split_file

EXAMPLES = "data/examples/examples.jsonl"


def main() -> None:
    d = P.load()["data"]
    ratios = {"train": d["train_split"], "val": d["val_split"], "test": d["test_split"]}
    report = split_file(EXAMPLES, {name: f"data/splits/{name}.jsonl" for name in SPLITS}, ratios, d["random_seed"])
    write_json("metrics/split.json", report)
    print("split: " + ", ".join(f"{k} {v['examples']} examples / {v['sessions']} sessions" for k, v in report.items()))


if __name__ == "__main__":
    run_stage(main)
