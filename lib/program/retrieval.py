"""Demonstrations chosen per input: the k nearest training examples by BM25 over their task text.

The same index is read by the exported OpenCode plugin (lib/opencode plugin format), which must
pick exactly the demos this module picks. Everything that could differ between Python and
JavaScript is fixed here, once:
- tokens are ASCII letter/digit runs, camelCase split, lower-cased, at least 2 characters long
  (the JS side uses the same regular expressions; non-ASCII text only separates tokens);
- the logarithm (idf) and each document's length normalisation are computed here and stored,
  so the plugin does only +, * and / on the same doubles in the same order;
- query terms are visited in sorted order, and equal scores go to the earlier bank entry
  (the bank is sorted by example id).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from lib.program.agent import Agent, _text, mean_score
from lib.core.paths import relativize
from lib.data.examples import INPUT_FIELDS, context_workdir

# The text fields a query (and a bank entry) is made of, in this order.
QUERY_FIELDS = ("task", "steps_so_far")
K1 = 1.2
B = 0.75

_WORD = re.compile(r"[A-Za-z0-9]+")
_CAMEL = re.compile(r"([a-z0-9])([A-Z])")


def tokenize(text: str) -> list[str]:
    """Lower-case ASCII word pieces: `readFile(src/app.ts)` -> read, file, src, app, ts."""
    tokens = []
    for word in _WORD.findall(text or ""):
        for part in _CAMEL.sub(r"\1 \2", word).split(" "):
            if len(part) > 1:
                tokens.append(part.lower())
    return tokens




def query_text(inputs: dict[str, Any], fields: Sequence[str]) -> str:
    """The text of `fields` (from QUERY_FIELDS) of an example's inputs, one per line, paths made relative."""
    workdir = context_workdir(str(inputs.get("context") or ""))
    return relativize("\n".join(str(inputs.get(f) or "") for f in fields), workdir, whole_names=False)


@dataclass(frozen=True)
class Index:
    """BM25 over a fixed list of documents (entry i of every list is document i)."""

    ids: list[str]
    tf: list[dict[str, int]]  # term counts per document
    norm: list[float]  # k1 * (1 - b + b * length / average length), per document
    idf: dict[str, float]
    k1: float = K1

    @classmethod
    def build(cls, ids: Sequence[str], texts: Sequence[str], k1: float = K1, b: float = B) -> "Index":
        if len(ids) != len(texts):
            raise ValueError("one id per text")
        counts = [Counter(tokenize(t)) for t in texts]
        lengths = [sum(c.values()) for c in counts]
        n = len(counts)
        avgdl = (sum(lengths) / n) if n and sum(lengths) else 1.0
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        # The "+1" form of BM25's idf: never negative, so a common word never pushes a document down.
        idf = {t: math.log((n - d + 0.5) / (d + 0.5) + 1.0) for t, d in sorted(df.items())}
        norm = [k1 * (1 - b + b * length / avgdl) for length in lengths]
        return cls(ids=list(ids), tf=[dict(sorted(c.items())) for c in counts], norm=norm, idf=idf, k1=k1)

    @classmethod
    def from_bank(cls, bank: dict[str, Any]) -> "Index":
        """The index an exported bank (see `bank`) describes: what the plugin scores with."""
        terms = bank["terms"]
        tf = [{terms[d["tf"][j]]: d["tf"][j + 1] for j in range(0, len(d["tf"]), 2)} for d in bank["demos"]]
        return cls(ids=[d["id"] for d in bank["demos"]], tf=tf, norm=[d["norm"] for d in bank["demos"]],
                   idf=dict(zip(terms, bank["idf"])), k1=bank["k1"])

    def scores(self, query: str) -> list[float]:
        """BM25 score of every document for the query text (0.0 where no term is shared)."""
        terms = sorted(set(tokenize(query)))
        out = []
        for tf, norm in zip(self.tf, self.norm):
            s = 0.0
            for t in terms:
                f = tf.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            out.append(s)
        return out

    def top_k(self, query: str, k: int) -> list[int]:
        """Positions of the k best documents: highest score first, ties to the earlier position."""
        scores = self.scores(query)
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))[:k]


def prompt_order(best_first: Sequence[int]) -> list[int]:
    """Picked demos in the order a prompt shows them: nearest last, next to the input, where a small
    model copies from most (the plugin shows them in the same order)."""
    return list(reversed(best_first))


BANK_FORMAT = "opencode-prompt-learn/demo-bank"


def bank(entries: Sequence[tuple[str, str, str]], k: int, fields: Sequence[str], header: str,
         key_args: dict[str, Sequence[str]], field_chars: int, result_chars: int) -> dict[str, Any]:
    """The plugin's demo bank from (id, query text, demo text) entries, sorted by id.

    Holds only what the plugin needs: each demo's rendered text, its term counts (as
    [term index, count, ...]) and length norm, the vocabulary with idf, and how to build a query.
    """
    entries = sorted(entries, key=lambda e: e[0])
    index = Index.build([e[0] for e in entries], [e[1] for e in entries])
    terms = sorted(index.idf)
    position = {t: i for i, t in enumerate(terms)}
    demos = []
    for (demo_id, _, text), tf, norm in zip(entries, index.tf, index.norm):
        flat = [n for t, c in sorted(tf.items()) for n in (position[t], c)]
        demos.append({"id": demo_id, "text": text, "norm": norm, "tf": flat})
    return {"format": BANK_FORMAT, "version": 1, "method": "bm25", "k": k, "fields": list(fields), "k1": index.k1,
            "header": header, "key_args": {t: list(a) for t, a in sorted(key_args.items())},
            "field_chars": field_chars, "result_chars": result_chars,
            "terms": terms, "idf": [index.idf[t] for t in terms], "demos": demos}


def bank_order(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Bank entries sorted by their id: the stable tie-break both sides share."""
    return sorted(rows, key=lambda r: str(r.get("id") or ""))


class RetrievalAgent(Agent):
    """The agent whose demos, for each input, are its fixed demos (if any) and then the k nearest others.

    The whole bank is the predictor's `demos` (so program.save() keeps it and export can ship it);
    each call passes only what it picked. `fixed` names bank demos every input gets first (the
    labeled optimizer's pick: they steady the answer format); the exported agent prompt shows
    them as its worked examples and the plugin adds the nearest of the rest, as here. The
    `retrieval` settings travel in the saved state too.
    """

    def __init__(self, bank: Sequence[dspy.Example], k: int, fields: Sequence[str], fixed: Sequence[str] = ()) -> None:
        super().__init__()
        unknown = [f for f in fields if f not in QUERY_FIELDS]
        if unknown or not fields:
            raise ValueError(f"retrieval fields must be a non-empty subset of {QUERY_FIELDS}, got {list(fields)}")
        self.k, self.fields, self.fixed = k, tuple(fields), tuple(fixed)
        self.predict.demos = bank_order(list(bank))
        self._reindex()

    def _reindex(self) -> None:
        self.fixed_demos, self.nearest_from = split_fixed(self.predict.demos, self.fixed)
        if len(self.fixed_demos) < len(self.fixed):
            found = {str(d.get("id")) for d in self.fixed_demos}
            raise ValueError(f"fixed demos not in the bank: {[i for i in self.fixed if i not in found]}")
        self.index = Index.build([str(d.get("id") or i) for i, d in enumerate(self.nearest_from)],
                                 [query_text(dict(d), self.fields) for d in self.nearest_from])

    def pick(self, inputs: dict[str, Any]) -> list[dspy.Example]:
        """The demos this input gets, in prompt order: the fixed ones, then the nearest, nearest last."""
        nearest = prompt_order(self.index.top_k(query_text(inputs, self.fields), self.k))
        return self.fixed_demos + [self.nearest_from[i] for i in nearest]

    def forward(self, **inputs: Any) -> dspy.Prediction:
        values = {name: _text(inputs.get(name)) for name in INPUT_FIELDS}
        return self.predict(**values, demos=self.pick(values))

    def dump_state(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = super().dump_state(*args, **kwargs)
        state["retrieval"] = {"method": "bm25", "k": self.k, "fields": list(self.fields), "k1": K1, "b": B,
                              "fixed": list(self.fixed)}
        return state

    def load_state(self, state: dict[str, Any], **kwargs: Any) -> "RetrievalAgent":
        state = dict(state)
        settings = state.pop("retrieval", None) or {}
        super().load_state(state, **kwargs)
        self.k = int(settings.get("k", self.k))
        self.fields = tuple(settings.get("fields", self.fields))
        self.fixed = tuple(settings.get("fixed", ()))
        self._reindex()
        return self


def split_fixed(demos: Sequence[Any], fixed: Sequence[str]) -> tuple[list[Any], list[Any]]:
    """(the demos named in `fixed`, in that order; all the others, in bank order), by demo id.

    A knn program shows the first as every input's fixed demos (and the exported prompt's worked
    examples) and picks the nearest from the second (the plugin's bank). Ids not among `demos` are
    left out."""
    by_id = {str(d.get("id")): d for d in demos}
    named = set(fixed)
    return [by_id[i] for i in fixed if i in by_id], [d for d in demos if str(d.get("id")) not in named]


def fixed_ids(program: dspy.Module, train: list[dspy.Example], n: int) -> list[str]:
    """Ids of the n demos the labeled optimizer would pick from `train` (DSPy's seeded sample)."""
    if n == 0:
        return []
    picked = dspy.LabeledFewShot(k=n).compile(program, trainset=train).predict.demos
    return [str(d.get("id")) for d in picked]


def select_on_val(program: dspy.Module, train: list[dspy.Example], val: list[dspy.Example],
                  metric: Callable[..., float], ks: Sequence[int], field_sets: Sequence[Sequence[str]],
                  fixed_counts: Sequence[int] = (0,)) -> RetrievalAgent:
    """The RetrievalAgent over `train` whose (fixed, k, fields) scores best on val (first in grid order on a tie).

    With one candidate nothing is evaluated. `program`'s instructions are kept, so retrieval
    composes with an optimized instruction.
    """
    candidates = [(n, k, tuple(fields)) for n in fixed_counts for fields in field_sets for k in ks]
    fixed = {n: fixed_ids(program, train, n) for n in fixed_counts}
    best, best_score = None, -1.0
    for n, k, fields in candidates:
        agent = RetrievalAgent(train, k, fields, fixed[n])
        agent.predict.signature = program.predict.signature
        if len(candidates) == 1:
            return agent
        score = mean_score(agent, val, metric)
        print(f"knn: fixed={n} k={k} fields={'+'.join(fields)}: val score {score:.3f}", flush=True)
        if score > best_score:
            best, best_score = agent, score
    assert best is not None
    print(f"knn: chose fixed={len(best.fixed)} k={best.k} fields={'+'.join(best.fields)}", flush=True)
    return best
