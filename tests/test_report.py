"""`mmcl report`: the HTML page, markdown summary and PNG plots of a run folder."""

import base64
import contextlib
import io
import json
import re
import shutil
import subprocess

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
GALLERY = {"gallery_text_to_image", "gallery_image_to_text", "zeroshot_confusion"}
ALL_PLOTS = CURVES | {"eval_metrics", "recall_at_k", "embedding_map"} | GALLERY
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


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


@pytest.fixture(scope="module")
def cli_report(tiny_run, tmp_path_factory):
    """`mmcl report` on the tiny run: the report folder and what the command printed."""
    out = tmp_path_factory.mktemp("cli-report") / "report"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", str(tiny_run), "--output", str(out), "--device", "cpu"]) == 0
    return out, printed.getvalue()


def test_cli_report_on_a_trained_run(tiny_run, cli_report):
    out, printed = cli_report
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


def test_labelled_embeddings_have_a_colour_and_a_legend_entry_per_class(tmp_path, monkeypatch):
    from matplotlib.colors import to_hex
    from matplotlib.figure import Figure

    saved = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig))
    labels = np.array([c for c in range(12) for _ in range(3)] + [-1, -1])
    x = np.random.default_rng(0).normal(size=(len(labels), 8))
    names = [f"shape {c}" for c in range(12)]
    emb = EvalEmbeddings("labelled", x, labels, names, {"image_to_text": [1.0], "text_to_image": [1.0]}, 38, "s")
    _, what = plot_embedding_map(tmp_path / "map.png", emb)
    assert what == "class"
    legend = saved[0].axes[0].get_legend()
    entries = {t.get_text(): to_hex(h.get_facecolor()[0]) for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert {f"shape {c} (3)" for c in range(12)} <= set(entries)
    assert len({entries[f"shape {c} (3)"] for c in range(12)}) == 12  # a distinct colour per class
    # more classes than the legend holds: the largest ones are named, and the title says so
    _, what = plot_embedding_map(tmp_path / "map2.png", emb, max_legend=5)
    assert what == "class; legend: the 5 largest of 12"


def test_gallery_and_confusion_matrix_of_the_run(cli_report):
    out, _ = cli_report
    markdown = (out / "report.md").read_text()
    assert "Retrieval gallery: text -> image" in markdown and "Zero-shot confusion matrix" in markdown
    assert "a fixed sample (seed 0) of the encoded test items" in markdown
    assert "labelled encoded images of test: true class in rows" in markdown


def test_confusion_shows_the_most_confused_classes(tmp_path):
    from mmcl.report.gallery import Confusion, confused_classes
    from mmcl.report.plots import _palette, plot_confusion

    counts = np.zeros((50, 50), dtype=int)
    np.fill_diagonal(counts, 3)
    for c in range(0, 48, 2):  # class c is taken for class c + 1, more often as c grows
        counts[c, c + 1] = c // 2 + 1
    counts[49, 49] = 0  # class 49: no image, no prediction
    shown = confused_classes(counts, limit=20)
    assert len(shown) == 20 and shown == sorted(shown)
    assert {46, 47, 44, 45} <= set(shown) and 0 not in shown  # the largest confusions; the smallest left out
    assert confused_classes(counts[:6, :6]) == [0, 1, 2, 3, 4, 5]
    names = [f"class {i}" for i in range(50)]
    path, what = plot_confusion(tmp_path / "c.png", Confusion("d", names, counts, int(counts.sum()), 0.5))
    assert what == "the 20 of 49 classes in the most confusions"
    with Image.open(path) as image:
        assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10
    colours = _palette(75)  # distinct for any number of classes
    assert len({tuple(round(v, 4) for v in c) for c in colours}) == 75


PROBE = """<script>
window.addEventListener('load', () => {
  const rows = [...document.querySelectorAll('figure')].map(f => {
    const img = f.querySelector('img'), r = img.getBoundingClientRect();
    return [f.id, img.complete && img.naturalWidth > 0, img.naturalWidth, img.naturalHeight,
            r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(String).join(',');
  });
  document.body.setAttribute('data-probe', rows.join(';') + '|' + document.documentElement.scrollHeight);
});
</script></body>"""


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
    flags += [f"--user-data-dir={tmp_path / 'chromium-profile'}", "--force-device-scale-factor=1"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (apt-get install chromium; CI installs it in .ci/run)"
)
def test_report_renders_in_headless_chromium(cli_report, tmp_path):
    """The page as a browser draws it: every figure's image decodes, and a screenshot of the page
    shows the gallery and the confusion matrix where the page puts them, as their PNGs."""
    out, _ = cli_report
    # a copy of the page that records where each figure's image is drawn and how large it decoded
    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", PROBE))
    url = probe.as_uri()
    dom = _chromium(tmp_path, "--window-size=1200,900", "--virtual-time-budget=5000", "--dump-dom", url)
    found = re.search(r'data-probe="([^"]*)"', dom.stdout)
    assert found, f"no layout from Chromium: {dom.stderr[-1500:]}"
    rows, height = found.group(1).split("|")
    figures = {}
    for row in rows.split(";"):
        name, decoded, *numbers = row.split(",")
        assert decoded == "true", f"{name}.png did not decode in Chromium"
        figures[name] = [round(float(v)) for v in numbers]
    assert set(figures) == ALL_PLOTS

    shot = tmp_path / "page.png"
    _chromium(tmp_path, f"--window-size=1200,{height}", f"--screenshot={shot}", url)
    with Image.open(shot) as image:
        page = np.asarray(image.convert("RGB")).astype(float)
    assert page.shape[0] == int(height) and page.std() > 10  # not blank
    for name in GALLERY:
        width, tall, left, top, shown_w, shown_h = figures[name]
        assert (width, tall) == Image.open(out / f"{name}.png").size
        # the drawn image, inside its 1-pixel border, against the PNG scaled to the same size
        drawn = page[top + 1 : top + shown_h - 1, left + 1 : left + shown_w - 1]
        with Image.open(out / f"{name}.png") as png:
            expected = np.asarray(png.convert("RGB").resize((drawn.shape[1], drawn.shape[0]))).astype(float)
        assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 50, f"{name}: a blank area where the image should be"
        assert np.abs(drawn - expected).mean() < 6, f"{name}: the screenshot does not show {name}.png"


class _Items:
    """A dataset source: items 2 (unreadable) and 4 (no caption) are what the encoder skips."""

    def __init__(self):
        from PIL import Image as PILImage

        self.transform = "the model's"
        self.items = [{"image": PILImage.new("RGB", (300, 200), (40 * i, 0, 0)), "captions": ["c"]} for i in range(6)]
        self.items[2] = (None, "unreadable")
        self.items[4]["captions"] = []

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        assert self.transform is None  # the thumbnails are the images as stored, not the model's input
        return self.items[i]


def test_gallery_ranks_by_hand(tmp_path):
    import types

    import torch

    from mmcl.eval.encode import Encoded
    from mmcl.report.gallery import build_gallery
    from mmcl.report.plots import plot_gallery_image_to_text, plot_gallery_text_to_image

    images = torch.eye(4)  # the encoder kept items 0, 1, 3, 5
    texts = torch.tensor([[0.1, 0.9, 0.3, 0.2], [0.0, 1.0, 0.0, 0.0], [0.0, 0.6, 0.8, 0.0]])
    enc = Encoded(images, torch.full((4,), -1), texts, torch.tensor([0, 1, 3]), ["zero", "one", "three"])
    data = types.SimpleNamespace(name="toy", source=_Items())
    g = build_gallery(enc, data, queries=10, k=3)
    # captions: similarities are the text features themselves (one-hot images)
    assert [(cap, true, [i for i, _ in top]) for cap, true, top in g.text_to_image] == [
        ("zero", 0, [1, 2, 3]),
        ("one", 1, [1, 0, 2]),  # ties (0.0) in index order
        ("three", 3, [2, 1, 0]),
    ]
    assert g.true_rank_t2i == [4, 1, 4]
    assert g.text_to_image[0][2][0][1] == pytest.approx(0.9)
    # images: image j scores caption c by texts[c, j]
    assert [(i, [c for c, _ in top]) for i, top in g.image_to_text] == [
        (0, [0, 1, 2]),
        (1, [1, 0, 2]),
        (2, [2, 0, 1]),
        (3, [0, 1, 2]),
    ]
    assert g.true_rank_i2t == [1, 1, 0, 3]  # image 2 has no caption
    assert data.source.transform == "the model's"  # restored
    # thumbnails of the kept items, in the encoder's order, at most 128 pixels a side
    assert {i: tuple(t[0, 0]) for i, t in g.thumbnails.items()} == {
        0: (0, 0, 0),
        1: (40, 0, 0),
        2: (120, 0, 0),
        3: (200, 0, 0),
    }
    assert g.thumbnails[0].shape == (85, 128, 3)
    for plot in (plot_gallery_text_to_image, plot_gallery_image_to_text):
        with Image.open(plot(tmp_path / f"{plot.__name__}.png", g)) as image:
            assert len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0)) > 10
