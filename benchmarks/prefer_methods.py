"""Preference methods on the embedded default: each of DPO, ORPO, KTO and SimPO from the same pairs and SFT
adapter, then the fine-tuned and each preferred model on the same test records.

    python benchmarks/prefer_methods.py [--records 96] [--methods dpo orpo kto simpo] [--simpo-beta 2.0]

Run after `dvc repro pairs` (it reads models/train/adapter, data/prefer and data/raft/{train,test}.jsonl
and the shipped params). Prints, per method: the prefer stage's time, its first and last loss, and on the
first `--records` test records F1, EM and the share of wrong answers taken from a distractor, with the
paired bootstrap interval of the F1 change against the fine-tuned model (evaluated once, its per-record F1
paired with each method's; eval.bootstrap's resamples and confidence, the top-level seed). Nothing is written
to the workspace.

The numerics are pinned as the stages pin them (koraft/core/numerics.py), so the times are the prefer stage's.
KORAFT_NATIVE_NUMERICS=1 runs the CPU's fastest kernels instead: on a 2-core AMD EPYC, where the pin is MKL's
COMPATIBLE branch, ten DPO steps took 150 s against the pinned 400 s, with the same losses and the same
answers on the first 48 test records (docs/preference.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from koraft.core.numerics import pin_environment

pin_environment()  # the stages' numerics (unless KORAFT_NATIVE_NUMERICS=1): set before torch is first imported

from koraft.core.config import load_params  # noqa: E402
from koraft.core.jsonl import read_jsonl  # noqa: E402
from koraft.evaluation.bootstrap import mean_of, paired_difference  # noqa: E402
from koraft.evaluation.config import load_eval  # noqa: E402
from koraft.evaluation.evaluate import evaluate  # noqa: E402
from koraft.evaluation.systems import EvalPaths  # noqa: E402
from koraft.preference.config import load_prefer  # noqa: E402
from koraft.preference.prefer import PreferPaths, prefer  # noqa: E402


def eval_params(params: dict, variants: dict[str, bool]) -> dict:
    """The shipped eval section on the chosen variants only: no conditions, perplexity, judge or served model."""
    changed = copy.deepcopy(params)
    changed["eval"]["variants"] = variants
    changed["eval"]["conditions"].update({"retrieved": False, "closed_book": False})
    changed["eval"]["perplexity"]["variants"] = []
    return changed


def scores(metrics: dict, name: str) -> str:
    values, wrong = metrics[name], metrics[name]["distractor_answers"]
    return (f"F1 {values['f1']:.4f}, EM {values['exact_match']:.4f}, wrong answers from a distractor "
            f"{wrong['from_distractor']}/{wrong['wrong']}")


def record_f1(review: list[dict], name: str) -> np.ndarray:
    """One system's per-record F1 as evaluate's review rows give it (4 decimals)."""
    return np.array([row["outputs"][name]["scores"]["f1"] for row in review])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=96)
    parser.add_argument("--methods", nargs="+", default=["dpo", "orpo", "kto", "simpo"])
    parser.add_argument("--simpo-beta", type=float, default=2.0, help="SimPO's beta (its paper: 2.0 to 2.5)")
    args = parser.parse_args()
    params = load_params()
    records = {row["id"]: row for row in read_jsonl("data/raft/train.jsonl")}
    pairs = list(read_jsonl("data/prefer/pairs.jsonl"))
    test = list(read_jsonl("data/raft/test.jsonl"))[:args.records]
    bootstrap = load_eval(params).bootstrap
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        paths = EvalPaths(adapter=Path("models/train/adapter"), student=root / "none", tiny_models=Path("models/base"),
                          predictions=root)
        metrics, review = evaluate(test, load_eval(eval_params(params, {"finetuned": True})), paths)
        finetuned = record_f1(review, "finetuned")
        print(f"finetuned: {scores(metrics, 'finetuned')} ({len(test)} test records)", flush=True)
        for method in args.methods:
            changed = copy.deepcopy(params)
            changed["prefer"]["method"] = method
            if method == "simpo":
                changed["prefer"]["args"]["beta"] = args.simpo_beta
            out = root / method
            started = time.perf_counter()
            trained = prefer(pairs, records, load_prefer(changed), PreferPaths(Path("models/train/adapter"), out,
                                                                              root / f"{method}-scratch"))
            seconds = time.perf_counter() - started
            metrics, review = evaluate(test, load_eval(eval_params(changed, {"preferred": True})),
                                       EvalPaths(adapter=paths.adapter, student=paths.student,
                                                 tiny_models=paths.tiny_models, predictions=root, preferred=out))
            f1 = paired_difference(mean_of(finetuned), mean_of(record_f1(review, "preferred")), len(test),
                                   bootstrap["resamples"], bootstrap["seed"], bootstrap["confidence"])
            print(f"{method}: {seconds:.0f} s, {trained['steps']} steps on {trained['rows']['rows']} rows, loss "
                  f"{trained['loss']['first']} -> {trained['loss']['final']}; {scores(metrics, 'preferred')}; "
                  f"F1 - finetuned {f1.delta:+.4f} [{f1.low:+.4f}, {f1.high:+.4f}]", flush=True)
            print(json.dumps(trained["last_logged"], ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
