"""`mmcl report`: the HTML page, markdown summary and PNG plots of a run folder."""

import base64
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import mmcl
from mmcl.cli import main
from mmcl.errors import ConfigError
from mmcl.recipe import recipe_from_dict
from mmcl.report import read_run, write_report
from mmcl.report.embeddings import EvalEmbeddings, cluster_labels, pca_2d
from mmcl.report.plots import plot_embedding_map

from .conftest import tiny_recipe_dict

CURVES = {"loss", "lr", "logit_scale", "throughput"}
ALL_PLOTS = CURVES | {"eval_metrics", "recall_at_k", "embedding_map"}


@pytest.fixture(scope="module")
def tiny_run(tiny_corpus, tmp_path_factory):
    """A 4-step run with an evaluation at step 2 and at the end."""
    out = tmp_path_factory.mktemp("report") / "run"
    recipe = tiny_recipe_dict(tiny_corpus, out, cpu=True)
    recipe["eval"]["every"] = 2
    mmcl.Trainer(recipe_from_dict(recipe)).fit()
    return out


def check_report(written: dict, plots: set[str]) -> str:
    """Every file exists, each plot is a real picture, and the page embeds each one."""
    assert set(written["plots"]) == plots
    html = written["html"].read_text()
    markdown = written["markdown"].read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64,") == len(plots)
    for name, path in written["plots"].items():
        assert path.name == f"{name}.png" and path.parent == written["html"].parent
        with Image.open(path) as image:
            image.load()
            assert image.format == "PNG" and image.width > 100 and image.height > 100
            pixels = np.asarray(image.convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10, f"{name}.png is (almost) one flat colour"
        assert base64.b64encode(path.read_bytes()).decode() in html, f"{name}.png not embedded in the HTML"
        assert f"]({name}.png)" in markdown
    return markdown


def test_cli_report_on_a_trained_run(tiny_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(tiny_run), "--output", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    for name in ["report.html", "report.md", *(f"{p}.png" for p in ALL_PLOTS)]:
        assert f"wrote {out / name}" in printed
    written = {
        "html": out / "report.html",
        "markdown": out / "report.md",
        "plots": {p: out / f"{p}.png" for p in ALL_PLOTS},
    }
    markdown = check_report(written, ALL_PLOTS)
    # header: run name, recipe summary, final metrics and the last evaluation's numbers
    assert "# Run report: tiny" in markdown and "vit_tiny_patch16_224" in markdown and "infonce" in markdown
    assert "| loss |" in markdown and "| test | retrieval | image_retrieval_recall@1 |" in markdown
    assert "**skipped samples:** none" in markdown and "colour = class" in markdown  # the corpus has labels
    # all 16 test images were encoded, so the recall@k curve agrees with the run's own evaluation
    results = json.loads((tiny_run / "results.json").read_text())
    retrieval = next(r["metrics"] for r in results if r["task"] == "retrieval")
    row = next(line for line in markdown.splitlines() if line.startswith("| test | 16 | 16 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3] == f"{100 * retrieval['text_retrieval_recall@1']:.2f}%"  # image -> text
    assert cells[6] == f"{100 * retrieval['image_retrieval_recall@1']:.2f}%"  # text -> image


def test_api_report_in_the_default_folder(tiny_run):
    written = write_report(tiny_run, embeddings=False)
    assert written["html"] == tiny_run / "report" / "report.html"
    assert written["markdown"] == tiny_run / "report" / "report.md"
    check_report(written, CURVES | {"eval_metrics"})
    assert any("no recall@k curve" in n for n in written["notes"])


def test_metrics_only_run_folder_still_gets_a_report(tiny_run, tmp_path):
    run = tmp_path / "copied"
    run.mkdir()
    shutil.copy(tiny_run / "metrics.jsonl", run / "metrics.jsonl")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train/lo')  # a run killed mid-write
    written = write_report(run)
    check_report(written, CURVES | {"eval_metrics"})
    notes = " ".join(written["notes"])
    assert "no recipe.yaml" in notes and "1 line(s)" in notes
    assert "no recipe.yaml" in written["html"].read_text()


def test_not_a_run_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="not an mmcl run folder"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mmcl: error:") and "not an mmcl run folder" in err and "metrics.jsonl" in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()


def test_resumed_steps_keep_the_last_logged_value(tmp_path):
    lines = [{"step": 1, "train/loss": 3.0}, {"step": 2, "train/loss": 2.0}, {"step": 2, "train/loss": 1.5}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    run = read_run(tmp_path)
    assert run.steps_values("train/loss") == ([1, 2], [3.0, 1.5])
    assert run.name == tmp_path.name and run.notes == []


def test_pca_and_clusters():
    rng = np.random.default_rng(0)
    # two tight groups far apart along one direction, plus a weaker second direction
    x = np.concatenate([rng.normal(0, 0.1, (20, 5)), rng.normal(0, 0.1, (20, 5))])
    x[:20, 2] += 5
    x[:, 4] += np.linspace(-1, 1, 40)
    coords, explained = pca_2d(x)
    assert coords.shape == (40, 2) and explained[0] > 0.8 and explained[0] + explained[1] <= 1 + 1e-9
    assert np.all(coords[:20, 0] > 0) != np.all(coords[20:, 0] > 0)  # the groups split along PC 1
    again, _ = pca_2d(x.copy())
    np.testing.assert_allclose(coords, again)  # signs are fixed, not left to the SVD
    labels = cluster_labels(x, k=2)
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[-1]
    assert pca_2d(x[:1])[0].shape == (1, 2) and set(cluster_labels(np.ones((3, 4)))) == {0}


def test_unlabelled_embeddings_are_coloured_by_cluster(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    x = np.concatenate([c + 0.05 * rng.normal(size=(6, 8)) for c in centres])
    emb = EvalEmbeddings(
        "unlabelled", x, np.full(18, -1), None, {"image_to_text": [1.0], "text_to_image": [1.0]}, 18, "s"
    )
    path, what = plot_embedding_map(tmp_path / "map.png", emb)
    assert what == "k-means cluster (k=3)"  # sqrt(18 / 2) clusters
    with Image.open(path) as image:
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10
