"""The experiment's bookkeeping without Ray or training: part records, the methods a config trains, config checks."""

from __future__ import annotations

import pytest
from helpers.configs import ROOT, run_config

from pipeline.config import ConfigError, load_config
from pipeline.workflows.methods import MethodError, experiment_methods
from pipeline.workflows.parts import FINISHED, PartChanged, PartRecords, fingerprint

EXPERIMENT_YAML = ROOT / "configs" / "tiny_experiment.yaml"


def test_a_part_is_done_only_when_finished_with_the_same_definition_and_its_products(tmp_path):
    records = PartRecords.load(tmp_path / "manifest.json")
    product = tmp_path / "out" / "weights.json"
    definition = {"train": {"beta": 500.0, "steps": 2}}
    assert not records.is_done("m", definition, [product])
    records.mark("m", definition, "started")
    assert not PartRecords.load(tmp_path / "manifest.json").is_done("m", definition, [product])
    product.parent.mkdir()
    product.write_text("{}")
    records.mark("m", definition, FINISHED, seconds=1.5)
    again = PartRecords.load(tmp_path / "manifest.json")  # read back from disk
    assert again.is_done("m", definition, [product])
    assert again.parts["m"]["seconds"] == 1.5
    assert not again.is_done("m", {"train": {"beta": 2000.0, "steps": 2}}, [product])
    product.unlink()
    assert not again.is_done("m", definition, [product])  # its products are gone: not done


def test_a_changed_part_is_refused_while_its_directory_holds_work(tmp_path):
    records = PartRecords.load(tmp_path / "manifest.json")
    records.mark("method:sum", {"train": {"beta": 500.0}}, FINISHED)
    work = tmp_path / "sum"
    records.check("method:sum", {"train": {"beta": 2000.0}}, work)  # nothing there: it may be redone
    work.mkdir()
    records.check("method:sum", {"train": {"beta": 2000.0}}, work)  # an empty directory holds no work
    (work / "pairs").mkdir()
    with pytest.raises(PartChanged, match=r"train\.beta: 500\.0 vs 2000\.0.*delete .*sum"):
        records.check("method:sum", {"train": {"beta": 2000.0}}, work)
    records.check("method:sum", {"train": {"beta": 500.0}}, work)  # the same settings: fine


def test_fingerprints_ignore_key_order_but_not_values():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_the_paper_methods_and_what_each_trains_with(tmp_path):
    cfg = run_config(tmp_path, base=EXPERIMENT_YAML)
    methods = {v.name: v for v in experiment_methods(cfg)}
    assert list(methods) == [
        "balanced_dpo", "diffusion_dpo", "static_reference", "random_metric", "sum", "normalized_sum",
    ]  # fmt: skip
    assert methods["diffusion_dpo"].strategy == "human"
    assert "train.ref_update.mode=none" in methods["diffusion_dpo"].overrides
    assert methods["static_reference"].overrides == ("train.ref_update.mode=none",)
    assert methods["balanced_dpo"].overrides == () and methods["balanced_dpo"].strategy == "majority"
    extra = run_config(
        tmp_path, "experiment.extra_methods={b2000: 'majority:train.beta=2000'}",
        "experiment.methods=[balanced_dpo, diffusion_dpo, b2000]", base=EXPERIMENT_YAML,
    )  # fmt: skip
    assert experiment_methods(extra)[-1].overrides == ("train.beta=2000",)


def test_configs_the_methods_cannot_be_trained_with_are_refused(tmp_path):
    no_labels = run_config(tmp_path, base=EXPERIMENT_YAML, prompts={"manifest": "data_manifests/tiny.yaml"})
    with pytest.raises(MethodError, match="prompts carry no labels.*single:<metric>"):
        experiment_methods(no_labels)
    one_metric = run_config(
        tmp_path, "experiment.baseline_labels=single:pickscore", base=EXPERIMENT_YAML,
        prompts={"manifest": "data_manifests/tiny.yaml"},
    )  # fmt: skip
    assert experiment_methods(one_metric)[1].strategy == "single:pickscore"
    static = run_config(tmp_path, "train.ref_update.mode=none", base=EXPERIMENT_YAML)
    with pytest.raises(MethodError, match="dynamic reference"):
        experiment_methods(static)
    with pytest.raises(ConfigError, match="unknown methods \\['dpo'\\]"):
        load_config(EXPERIMENT_YAML, ["experiment.methods=[balanced_dpo, dpo]"])
    with pytest.raises(ConfigError, match="baseline 'diffusion_dpo' is not among the methods"):
        load_config(EXPERIMENT_YAML, ["experiment.methods=[balanced_dpo, sum]"])
    with pytest.raises(ConfigError, match="eval.prompts .* or eval.prompt_sets"):
        load_config(EXPERIMENT_YAML, ["eval.prompts={manifest: data_manifests/tiny_eval.yaml}"])
