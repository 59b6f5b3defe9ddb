"""The report page on synthetic runs (no model, no Ray): sections, statistics on every row, bounded samples,
missing parts, escaping, offline assets, thumbnails, and the training curves it reads."""

from __future__ import annotations

import io
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from pipeline.io import write_manifest
from pipeline.paths import RunPaths, table_files
from pipeline.reporting import ReportLimits, build_report
from pipeline.reporting.collect import collect_candidates, collect_pairs, read_curves
from pipeline.reporting.images import ImageFolder
from pipeline.reporting.render import SECTIONS, lowest_metric_rows
from pipeline.testing.candidates import candidates_from_scores
from pipeline.testing.synthetic_run import make_synthetic_run, synthetic_config, write_candidates
from trainer.metrics_log import append_metrics, read_metrics


class PageParser(HTMLParser):
    """What the tests look at: sections in order, image sources, links, and the classes of elements."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.urls: list[str] = []
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id", ""))
        if tag == "img":
            self.images.append(a["src"])
        for key in ("src", "href"):
            if a.get(key):
                self.urls.append(a[key])
        self.classes += (a.get("class") or "").split()


def parse(page: Path) -> tuple[str, PageParser]:
    html = page.read_text(encoding="utf-8")
    parser = PageParser()
    parser.feed(html)
    return html, parser


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "run"
    make_synthetic_run(root, 30, 6, train_steps=300, eval_items=64)
    return root


def test_page_of_a_whole_run_has_every_section_and_every_image_beside_it(full_run):
    page = build_report(full_run)
    assert page == full_run / "report" / "index.html"
    html, parsed = parse(page)
    assert parsed.sections == list(SECTIONS)
    assert 'class="missing"' not in html
    assert parsed.images, "the page shows images"
    for src in parsed.images:
        assert not src.startswith(("http:", "https:", "//", "data:")) and src.startswith("images/")
        with Image.open(page.parent / src) as im:
            im.load()
            assert im.size[0] > 0
    # offline: nothing is fetched from elsewhere (the SVG namespace is an identifier, not a request)
    assert all(not u.startswith(("http:", "https:", "//")) for u in parsed.urls)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    # the parts the issue asks for
    for text in ("Protocol", "Package versions", "Seconds per stage", "Keep rate per strategy", "Vote margins",
                 "overruled", "Metric agreement", "winner beside loser", "implicit accuracy", "reward margin",
                 "winner_worse", "learning rate", "reference refresh", "win rate over the base", "lowest metric",
                 "prompt contains"):  # fmt: skip
        assert text in html, text
    assert parsed.classes.count("item") == 48 and parsed.classes.count("pair") == 24


def test_the_lowest_metric_is_drawn_unless_the_table_has_a_worst_metric_row_of_its_own():
    rows = [
        ("a", "clip", 0.4, 0.3, 0.5),
        ("a", "pick", 0.7, 0.6, 0.8),
        ("a", "average", 0.1, 0.0, 0.2),  # a summary, not a metric
        ("b", "clip", 0.6, 0.5, 0.7),
        ("b", "pick", 0.5, 0.4, 0.6),
        ("b", "worst_metric", 0.45, 0.4, 0.5),  # evaluation computed it (its own interval): shown as it is
    ]
    assert lowest_metric_rows(rows, ["clip", "pick"]) == [("a", "clip", 0.4, 0.3, 0.5)]


def test_statistics_use_every_row_while_the_page_shows_a_bounded_sample(tmp_path):
    root = tmp_path / "run"
    make_synthetic_run(root, 200, 5, train_steps=5000, eval_items=400)
    limits = ReportLimits(prompts=3, candidates_per_prompt=4, pairs=5, eval_items=7, curve_points=50)
    paths = RunPaths(root)

    candidates = collect_candidates(paths, limits)
    assert candidates is not None
    assert candidates.n_rows == 1000 and candidates.n_prompts == 200 and len(candidates.prompts) == 3
    assert all(len(p.candidates) == 4 and p.n_candidates == 5 for p in candidates.prompts)
    everything = pl.read_parquet(table_files(paths.candidates))
    assert candidates.stats["clip"]["mean"] == pytest.approx(everything["score_clip"].cast(pl.Float64).mean())
    assert sum(candidates.histograms["clip"][1]) == 1000

    pairs = collect_pairs(paths, "majority", limits)
    assert pairs is not None and len(pairs.pairs) == 5
    kept = pl.read_parquet(table_files(paths.pairs("majority")))
    assert pairs.n_pairs == kept.height == sum(n for _, _, n in pairs.margins)
    assert pairs.overruled["clip"]["against"] == pytest.approx(float((kept["vote_clip"] == -1).mean()))

    page = build_report(root, limits)
    html, parsed = parse(page)
    assert "3 of 200 prompts (a seeded sample)" in html
    assert f"5 of {kept.height:,} pairs (a seeded sample)" in html
    assert "7 of 400 items (a seeded sample)" in html  # 100 prompts × 4 seeds
    assert "50 of 500 logged points" in html  # logged every 10 steps
    assert parsed.classes.count("card") == 12 and parsed.classes.count("pair") == 5
    assert parsed.classes.count("item") == 7
    assert len(list((page.parent / "images").iterdir())) == len(set(parsed.images))


def test_without_the_vote_diagnostics_agreement_is_computed_over_every_kept_pair(tmp_path):
    root = tmp_path / "run"
    make_synthetic_run(root, 20, 4, train_steps=None, eval_items=None)
    paths = RunPaths(root)
    pairs = collect_pairs(paths, "majority", ReportLimits())
    assert pairs is not None and pairs.diagnostics is not None and pairs.agreement_kept is None
    shutil.rmtree(paths.pairs("majority") / "diagnostics")
    pairs = collect_pairs(paths, "majority", ReportLimits())
    assert pairs is not None and pairs.diagnostics is None and pairs.agreement_kept is not None
    kept = pl.read_parquet(table_files(paths.pairs("majority")))
    same = float((kept["vote_hpsv21"] == kept["vote_clip"]).mean())
    assert pairs.agreement_kept[0, 1] == pairs.agreement_kept[1, 0] == pytest.approx(same)
    assert "Metric agreement over the kept pairs" in parse(build_report(root))[0]


def test_parts_not_run_yet_are_sections_that_say_so(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    html, parsed = parse(build_report(empty))
    assert parsed.sections == list(SECTIONS)
    for text in (
        "nothing to describe",
        "No candidates yet",
        "No pairs yet",
        "No training yet",
        "No evaluation yet",
    ):
        assert text in html

    root = tmp_path / "stage1-only"
    make_synthetic_run(root, 4, 3, vote=False)
    html, parsed = parse(build_report(root))
    assert "12 candidate images of 4 prompts" in html and parsed.classes.count("card") == 12
    assert "No pairs yet" in html and "No training yet" in html and "No evaluation yet" in html

    with pytest.raises(FileNotFoundError, match="run directory not found"):
        build_report(tmp_path / "nowhere")


def test_online_rounds_get_one_part_each(tmp_path):
    root = tmp_path / "run"
    for r in (0, 1):
        make_synthetic_run(root / f"round_{r}", 4, 3, train_steps=100, eval_items=None, seed=r)
    html, _ = parse(build_report(root))
    for part in ("candidates", "pairs", "training"):
        section = html.split(f'<section id="{part}"')[1].split("</section>")[0]
        assert "<h3>round 0</h3>" in section and "<h3>round 1</h3>" in section
    assert "round 1: candidates" in html


def test_text_from_the_run_is_escaped(tmp_path):
    root = tmp_path / "run"
    scores = {"clip": np.array([[1.0, 2.0]]), "pick": np.array([[2.0, 1.0]])}
    cfg = synthetic_config(root, list(scores), 1, 1)
    write_candidates(
        RunPaths(root), candidates_from_scores(['<script>alert("x")</script> & co'], scores), cfg
    )
    html, _ = parse(build_report(root))
    assert (
        "<script>alert" not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in html
    )
    assert html.count("<script>") == 1  # the page's own


def test_a_rebuild_replaces_the_report_whole(full_run):
    build_report(full_run, ReportLimits(prompts=3, pairs=3, eval_items=3, seed=1))
    page = build_report(full_run, ReportLimits(prompts=1, pairs=1, eval_items=1, seed=2))
    _, parsed = parse(page)
    on_disk = {f"images/{p.name}" for p in (page.parent / "images").iterdir()}
    assert on_disk == set(parsed.images), "only the images of the new page are beside it"
    assert [p.name for p in full_run.iterdir() if p.name.startswith(".report")] == []


def _png(size: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_large_images_become_bounded_thumbnails_and_small_ones_are_copied(tmp_path):
    folder = ImageFolder(tmp_path, thumb_px=128)
    small, large = _png(64), _png(512, 1)
    assert folder.add("small", small) == "images/small.png"
    assert (tmp_path / "images" / "small.png").read_bytes() == small
    assert folder.add("large", large) == "images/large.jpg"
    with Image.open(tmp_path / "images" / "large.jpg") as im:
        assert im.format == "JPEG" and max(im.size) == 128
    assert (tmp_path / "images" / "large.jpg").stat().st_size < len(large) / 10
    assert folder.add("broken", b"not an image") is None
    assert folder.add("../escape", small) == "images/___escape.png"


def test_an_unreadable_image_is_a_placeholder_not_a_broken_img(tmp_path):
    root = tmp_path / "run"
    scores = {"clip": np.array([[1.0, 2.0]])}
    table = candidates_from_scores(["a prompt"], scores)
    table = table.set_column(
        table.schema.get_field_index("image"), "image", [[b"garbage", table["image"][1].as_py()]]
    )
    cfg = synthetic_config(root, ["clip"], 1, 1)
    write_candidates(RunPaths(root), table, cfg)
    html, parsed = parse(build_report(root))
    assert "image unreadable" in html and len(parsed.images) == 1


def test_training_curves_come_from_metrics_jsonl_else_from_tensorboard(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    logs = tmp_path / "logs"
    writer = SummaryWriter(str(logs / "dpo"))
    for step, loss in ((10, 0.69), (20, 0.6), (20, 0.55), (30, 0.5)):  # step 20 logged twice (a resumed run)
        writer.add_scalar("train/loss", loss, step)
        writer.add_scalar("ref/refresh", 1.0, step)
    writer.close()
    curves, source = read_curves(logs)
    assert source == "tensorboard" and set(curves) == {"loss"}
    assert [s for s, _ in curves["loss"]] == [10, 20, 30]
    assert [v for _, v in curves["loss"]] == pytest.approx([0.69, 0.55, 0.5])

    append_metrics(logs / "metrics.jsonl", 10, {"loss": 0.7, "lr": 1e-4})
    curves, source = read_curves(logs)
    assert source == "metrics.jsonl" and curves == {"loss": [(10, 0.7)], "lr": [(10, 1e-4)]}
    assert read_curves(tmp_path / "no-logs") == ({}, None)


def test_metrics_log_keeps_the_last_line_of_a_step_skips_a_torn_end_and_names_a_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_metrics(path, 2, {"loss": 0.7, "implicit_acc": 0.5})
    append_metrics(path, 4, {"loss": float("nan"), "implicit_acc": 0.6})
    append_metrics(path, 4, {"loss": 0.6, "implicit_acc": 0.65})  # resumed: step 4 again
    with path.open("a") as f:
        f.write('{"step": 6, "loss": 0.')  # killed while writing
    assert read_metrics(path) == {"loss": [(2, 0.7), (4, 0.6)], "implicit_acc": [(2, 0.5), (4, 0.65)]}
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(path)
    assert json.loads(lines[1])["loss"] is None  # JSON has no NaN


def test_missing_tables_beside_a_manifest_do_not_break_the_page(tmp_path):
    root = tmp_path / "run"
    write_manifest(RunPaths(root).pairs("majority"), counts={})
    write_manifest(RunPaths(root).train("majority"), status="stopped at step 3", config={}, step=3)
    (RunPaths(root).eval).mkdir(parents=True)
    html, parsed = parse(build_report(root))
    assert parsed.sections == list(SECTIONS)
    assert "stopped at step 3" in html and "No training curves" in html


def test_the_protocol_says_how_seeds_were_drawn_and_what_the_intervals_resample():
    from pipeline.reporting.render import protocol

    config = {
        "generation": {"seed_offset": 0, "seed_scheme": "per_prompt"},
        "eval": {"prompts": {"manifest": "m.yaml"}, "seed_offset": 7, "bootstrap_unit": "prompt"},
    }
    stage1, *_, evaluation = protocol(config)
    assert "each prompt its own noise" in stage1
    assert "bootstrap intervals over prompts" in evaluation
    old = protocol({"generation": {"seed_offset": 0}, "eval": {"prompts": {"manifest": "m.yaml"}}})
    assert (
        "the same seeds for every prompt" in old[0] and "intervals over items" in old[-1]
    )  # older runs' configs
