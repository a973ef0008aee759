"""Every stage checks its params section first; a bad value is one line naming the key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from helpers import ROOT, set_dotted

from koraft.core.config import check_seed, load_params
from koraft.core.errors import KoraftError, ParamError
from koraft.data.config import load_raft, load_split, load_validate
from koraft.evaluation.config import load_eval
from koraft.models.presets import resolve_model
from koraft.training.config import (
    check_train,
    distill_section,
    distill_settings,
    load_distill,
    load_train,
    train_section,
)


def broken(params, dotted_key, value):
    params = copy.deepcopy(params)
    set_dotted(params, dotted_key, value)
    return params


@pytest.mark.parametrize("check, key, value, named", [
    (load_raft, "raft.p_golden", 1.5, "raft.p_golden"),
    (load_raft, "raft.p_golden", "0.8", "raft.p_golden"),
    (load_raft, "raft.num_distractors", -1, "raft.num_distractors"),
    (load_raft, "raft.num_distractors", 2.5, "raft.num_distractors"),
    (load_raft, "raft.distractor_source", "dense", "raft.distractor_source"),
    (load_raft, "raft.omitted_golden_target", "guess", "raft.omitted_golden_target"),
    (load_raft, "raft.instruction", "  ", "raft.instruction"),
    (load_raft, "raft.bm25.k1", "1.5e0x", "raft.bm25.k1"),
    (load_raft, "raft.bm25.pool", 0, "raft.bm25.pool"),
    (load_raft, "raft.bm25.pool", 2.5, "raft.bm25.pool"),
    (load_raft, "raft.bm25.terms", "words", "raft.bm25.terms"),
    (load_split, "split.ratios.train", 0.7, "split.ratios"),
    (load_split, "split.ratios.val", -0.1, "split.ratios.val"),
    (load_split, "split.salt", True, "split.salt"),
    (check_seed, "seed", "42", "seed"),
    (load_validate, "validate.lengths.answer", [5, 1], "validate.lengths.answer"),
    (load_validate, "validate.near_duplicates.bands", 7, "validate.near_duplicates.bands"),
    (load_validate, "validate.near_duplicates.threshold", 2, "validate.near_duplicates.threshold"),
    (load_validate, "validate.inputs.0.format", "xml", "validate.inputs[0].format"),
    (load_validate, "validate.inputs.2.columns", {"questoin": "질문"}, "validate.inputs[2].columns"),
])
def test_bad_value_names_its_key(params, check, key, value, named):
    with pytest.raises(ParamError) as error:
        check(broken(params, key, value))
    message = str(error.value)
    assert message.startswith(f"params.yaml: {named}:") and "\n" not in message


MISSPELLED = {  # a misspelled key, the check that reads its section, the key it should have been
    "model.revison": (lambda p: resolve_model(p["model"]), "revision"),
    "distill.student.revison": (lambda p: resolve_model(p["distill"]["student"], key="distill.student"), "revision"),
    "raft.num_distractor": (load_raft, "num_distractors"),
    "raft.bm25.poool": (load_raft, "pool"),
    "split.seeed": (load_split, None),  # near no known key: they are listed
    "validate.unverified_quote": (load_validate, "unverified_quotes"),
    "validate.near_duplicates.treshold": (load_validate, "threshold"),
    "train.early_stop_patience": (lambda p: check_train(train_section(p)), "early_stopping_patience"),
    "distill.loss.alfa": (lambda p: distill_settings(distill_section(p)), "alpha"),
    "distill.teacher.topk": (lambda p: distill_settings(distill_section(p)), "top_k"),
}


@pytest.mark.parametrize("dotted", MISSPELLED)
def test_a_misspelled_key_is_refused_with_the_closest_known_one(params, dotted):
    """A key no check reads would be a setting silently not applied (a revision pin never pinned)."""
    check, meant = MISSPELLED[dotted]
    *section, typo = dotted.split(".")
    with pytest.raises(ParamError) as error:
        check(broken(params, dotted, "x"))
    message = str(error.value)
    assert message.startswith(f"params.yaml: {'.'.join(section)}: unknown keys ['{typo}']") and "\n" not in message
    assert (f"(did you mean '{typo}' -> '{meant}'?)" if meant else "(known keys: ratios, salt)") in message


@pytest.mark.parametrize("load, dotted", [(load_train, "model.revison"), (load_distill, "distill.student.revison"),
                                          (load_eval, "model.revison"), (load_eval, "distill.student.revison")])
def test_the_model_sections_are_checked_when_the_stage_loads_its_settings(params, load, dotted):
    """Before any data is read or any variant generates: not after the base variant's minutes of generation."""
    with pytest.raises(ParamError, match=re.escape(dotted.rsplit(".", 1)[0]) + r": unknown keys \['revison'\]"):
        load(broken(params, dotted, "abc123"))


def test_an_unknown_top_level_key_is_refused_when_params_are_loaded(tmp_path):
    text = (ROOT / "params.yaml").read_text(encoding="utf-8")
    (tmp_path / "params.yaml").write_text(text + "\nseeds: 7\n", encoding="utf-8")
    with pytest.raises(KoraftError) as error:
        load_params(tmp_path / "params.yaml")
    assert str(error.value) == (f"{tmp_path / 'params.yaml'}: unknown top-level keys ['seeds'] "
                                f"(did you mean 'seeds' -> 'seed'?)")


def test_yaml_exponent_without_dot_gets_a_hint(params):
    with pytest.raises(ParamError, match="2.0e-4"):
        load_raft(broken(params, "raft.p_golden", "2e-4"))


def test_shipped_params_are_valid(params):
    check_seed(params)
    load_validate(params)
    load_split(params)
    load_raft(params)


def has_key(params: dict, dotted_key: str) -> bool:
    node = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_documented_overrides_name_keys_params_yaml_has(params):
    """`dvc exp run -S key=value` refuses a key params.yaml lacks ("Key 'epochs' is not in struct"), so every
    override the docs and sweeps.yaml show must name one that is there (or say `+key` to add it)."""
    overrides = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        overrides += [(path.name, key) for key in re.findall(r"-S\s+'?([A-Za-z_][\w.-]*)=", text)
                      if key != "key"]  # experiments.md's placeholder `-S key=value`
    for entries in yaml.safe_load((ROOT / "sweeps.yaml").read_text(encoding="utf-8")).values():
        overrides += [("sweeps.yaml", key) for entry in entries for key in entry]
    assert len(overrides) > 20  # the pattern still finds the documented commands
    assert [(name, key) for name, key in overrides if not has_key(params, key)] == []
