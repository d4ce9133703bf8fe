"""Model cards: the ``README.md`` that :func:`~mmcl.models.pretrained.save_pretrained`,
``mmcl export`` and ``push_to_hub`` write beside a model.

A card is what the Hugging Face Hub reads: YAML metadata (licence, library, pipeline tag, base
model, datasets, and the evaluation results in the Hub's ``model-index`` format) above a markdown
body (what the model is, how it was trained, its results, how to load it in mmcl and, for an
open_clip export, in open_clip, and the recipe). It is built with ``huggingface_hub.ModelCard``,
so the Hub's own card parser reads it back.

Where the facts come from: a model loaded from a run folder remembers it (:func:`remember_origin`),
so a card written from it carries the run's recipe (``RUN_DIR/recipe.yaml``) and the evaluation of
that checkpoint (``RUN_DIR/eval/step-N.json``, or ``results.json`` when it is of that step); a model
loaded from a pretrained folder carries that folder's card and recipe. If the weights changed
after loading (a fine-tune), the card leaves the old results out and says so.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from pathlib import Path

import yaml

RECIPE_NAME = "training_recipe.yaml"  # the recipe a pretrained folder was trained with (not recipe.yaml: run folders)
CARD_NAME = "README.md"
DEFAULT_LICENSE = "apache-2.0"
# a record's task (mmcl's or CLIP_benchmark's name) -> (the Hub's task type, a readable task name)
TASK_TYPES = {
    "zeroshot": ("zero-shot-image-classification", "Zero-shot image classification"),
    "zeroshot_classification": ("zero-shot-image-classification", "Zero-shot image classification"),
    "retrieval": ("image-text-retrieval", "Image-text retrieval"),
    "zeroshot_retrieval": ("image-text-retrieval", "Image-text retrieval"),
    "linear_probe": ("image-classification", "Linear probe"),
    "linear-probe": ("image-classification", "Linear probe"),
    "knn": ("image-classification", "kNN classification"),
    "compositional": ("image-text-matching", "Compositional image-text matching"),
    "image_retrieval": ("image-retrieval", "Image-image retrieval"),
    "dense_probe": ("image-segmentation", "Dense linear probe"),
    "finetune": ("image-classification", "Fine-tuning"),
}
# metrics that describe the data or the probe's settings, not how good the model is
NOT_RESULTS = re.compile(
    r"^(num_.*|.*_rank(_optimistic)?|.*attribute_recall@1|duplicate_caption_fraction|"
    r"weight_decay|val_acc1|temperature|k|chance_recall_at_1)$"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SPLIT_NAMES = {"train", "training", "val", "valid", "validation", "test", "data", "captions", "pairs"}


@dataclasses.dataclass
class CardFacts:
    """What a card says beyond the model's own config.

    Attributes:
        license: a Hub licence id (``apache-2.0``, ``mit``, ``cc-by-4.0``, ``other``, ...).
        datasets: training datasets (Hub ids where there are; else names); None: from the recipe.
        base_model: models the weights started from (Hub ids); None: from the recipe.
        eval_results: ``huggingface_hub.EvalResult`` list (see :func:`eval_results`).
        results_note: where the results come from (a sentence), or why there are none.
        recipe: the training recipe as a dict (a run's ``recipe.yaml``).
        model_name: the name in the title and in ``model-index``; None: the folder's or repo's.
    """

    license: str = DEFAULT_LICENSE
    datasets: list[str] | None = None
    base_model: list[str] | None = None
    eval_results: list | None = None
    results_note: str = ""
    recipe: dict | None = None
    model_name: str | None = None


# --------------------------------------------------------------------------------------------------
# Where a model came from
# --------------------------------------------------------------------------------------------------


def fingerprint(model) -> float:
    """A number that changes when any floating-point weight changes (a sum of sums, in float64)."""
    return float(sum(float(t.detach().double().sum()) for t in model.state_dict().values() if t.is_floating_point()))


def remember_origin(model, path: Path, kind: str, checkpoint: Path | None = None, ema: bool | None = None) -> None:
    """Note on ``model`` the folder it was loaded from (``kind``: run, pretrained or open_clip), the
    checkpoint and whether EMA weights were loaded (run folders), and a fingerprint of its weights."""
    model.mmcl_origin = {
        "path": Path(path),
        "kind": kind,
        "checkpoint": None if checkpoint is None else Path(checkpoint),
        "ema": ema,
        "fingerprint": fingerprint(model),
    }


def _step_results(run_dir: Path, step: int) -> tuple[list[dict], str]:
    """The evaluation records of ``step`` and the file they come from."""
    for path in (run_dir / "eval" / f"step-{step:07d}.json", run_dir / "results.json"):
        if path.is_file():
            try:
                records = json.loads(path.read_text())
            except json.JSONDecodeError:
                continue
            if isinstance(records, list) and records and all(r.get("step") == step for r in records):
                return records, path.name if path.parent == run_dir else f"eval/{path.name}"
    return [], ""


def _run_facts(origin: dict) -> CardFacts:
    run_dir, ckpt = origin["path"], origin["checkpoint"]
    facts = CardFacts()
    if (run_dir / "recipe.yaml").is_file():
        facts.recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
        facts.model_name = (facts.recipe or {}).get("name")
    try:
        step = int(ckpt.name.rsplit("-", 1)[-1])
    except (AttributeError, ValueError):
        return facts
    has_ema = (ckpt / "ema.safetensors").is_file()
    if has_ema and not origin["ema"]:
        facts.results_note = (
            f"No evaluation results: the run evaluated the EMA of its weights and these are the trained weights "
            f"(step {step})."
        )
        return facts
    records, source = _step_results(run_dir, step)
    if records:
        facts.eval_results = eval_results(records)
        facts.results_note = f"From the run's `{source}`: its own evaluation of these weights (step {step})."
    else:
        facts.results_note = f"No evaluation results: the run has none for step {step}."
    return facts


def _pretrained_facts(path: Path) -> CardFacts:
    from huggingface_hub import ModelCard

    facts = CardFacts()
    if (path / RECIPE_NAME).is_file():
        facts.recipe = yaml.safe_load((path / RECIPE_NAME).read_text())
    if (path / CARD_NAME).is_file():
        try:
            data = ModelCard.load(path / CARD_NAME, ignore_metadata_errors=True).data
        except Exception:  # noqa: BLE001 - an unreadable card is no card: the facts start afresh
            return facts
        facts.license = data.license or DEFAULT_LICENSE
        facts.datasets = _as_list(data.datasets)
        facts.base_model = _as_list(data.base_model)
        facts.eval_results = data.eval_results
        facts.model_name = data.model_name
        if data.eval_results:
            facts.results_note = f"Carried over from the card of `{path.name}`, the folder the weights were read from."
    return facts


def origin_facts(model) -> tuple[CardFacts, list[str]]:
    """The facts the model's origin gives (:func:`remember_origin`), and notes for the card."""
    origin = getattr(model, "mmcl_origin", None)
    if not origin:
        return CardFacts(), []
    if fingerprint(model) != origin["fingerprint"]:
        return CardFacts(), [
            f"The weights changed after they were loaded from `{origin['path'].name}`: its recipe and results "
            "are not these weights', so the card leaves them out."
        ]
    if origin["kind"] == "run":
        return _run_facts(origin), []
    return _pretrained_facts(origin["path"]), []  # a pretrained or open_clip folder: its card, if any


# --------------------------------------------------------------------------------------------------
# Results and metadata
# --------------------------------------------------------------------------------------------------


def default_headline(task: str, metrics: dict) -> list[str]:
    """Every metric of a record that scores the model (floats; not counts, ranks or settings)."""
    return [
        name
        for name, value in metrics.items()
        if isinstance(value, float) and not isinstance(value, bool) and value == value and not NOT_RESULTS.match(name)
    ]


def eval_results(records: list[dict], headline: Callable | None = None) -> list:
    """``huggingface_hub.EvalResult`` for each headline metric of each result record
    (``{"dataset", "task", "metrics"}``, as in ``results.json`` or ``mmcl eval``'s files); values
    are fractions, as in the records (1.0 = 100%)."""
    from huggingface_hub import EvalResult

    pick = headline or default_headline
    out = []
    for r in records:
        task, metrics = str(r.get("task")), r.get("metrics") or {}
        task_type, task_name = TASK_TYPES.get(task, (task, task))
        for name in [n for n in pick(task, metrics) or default_headline(task, metrics) if not NOT_RESULTS.match(n)]:
            value = metrics.get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
                continue
            out.append(
                EvalResult(
                    task_type=task_type,
                    task_name=task_name,
                    dataset_type=str(r.get("dataset")),
                    dataset_name=str(r.get("dataset")),
                    metric_type=name,
                    metric_name=name,
                    metric_value=float(value),
                )
            )
    return out


def _as_list(value) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _data_name(path: str) -> str:
    """A dataset's name for the card: a Hub id as it is; a local path by its folder or file name,
    never the whole path."""
    if _HUB_ID.match(path) and not Path(path).exists():
        return path
    p = Path(path.split("{")[0].rstrip("/"))
    stem = p.stem if p.suffix else p.name
    return p.parent.name if stem.lower() in SPLIT_NAMES and p.parent.name else stem


def recipe_datasets(recipe: dict | None) -> list[str]:
    """The training datasets a recipe names (``data.train``, ``data.synthetic``)."""
    data = (recipe or {}).get("data") or {}
    if data.get("synthetic"):
        return ["mmcl-synthetic-shapes"]
    train = data.get("train")
    paths = train if isinstance(train, list) else [train] if train else []
    return list(dict.fromkeys(_data_name(str(p)) for p in paths))


def recipe_base_models(recipe: dict | None) -> list[str]:
    """The Hub ids a recipe's weights started from (``model.init_from``, ``model.text.path``)."""
    model = (recipe or {}).get("model") or {}
    found = [model.get("init_from"), (model.get("text") or {}).get("path"), model.get("path")]
    if str(model.get("name") or "").startswith("hf-hub:"):  # an open_clip model named by its Hub id
        found.append(str(model["name"])[len("hf-hub:") :])
    return [str(p) for p in found if p and _HUB_ID.match(str(p)) and not Path(str(p)).exists()]


# --------------------------------------------------------------------------------------------------
# The card
# --------------------------------------------------------------------------------------------------


def _describe(model) -> str:
    cfg = model.cfg
    if getattr(cfg, "backend", None) == "open_clip":  # a library's own model (models/backends.py)
        return f"An open_clip `{type(model.model).__name__}` model fine-tuned with mmcl (open_clip's own towers)."
    if getattr(cfg, "backend", None) == "hf":
        return f"A Hugging Face `{type(model.model).__name__}` fine-tuned with mmcl."
    vision = f"timm vision tower `{cfg.vision.name}`"
    if getattr(model, "kind", "") == "image_image":
        return (
            f"An image encoder trained with mmcl's image-image contrastive learning: {vision}, "
            f"{cfg.embed_dim}-d embeddings."
        )
    text = model.text.transformer.config.model_type
    return (
        f"A CLIP-style dual encoder trained with mmcl: {vision}, Hugging Face `{text}` text tower, "
        f"{cfg.embed_dim}-d embeddings."
    )


def _training_lines(recipe: dict | None, datasets: list[str]) -> list[str]:
    if not recipe:
        return ["The training recipe is not known (the model was not read from a run folder)."]
    data, train, loss = recipe.get("data") or {}, recipe.get("train") or {}, recipe.get("loss") or {}
    model = recipe.get("model") or {}
    starts = []
    if model.get("init_from"):
        starts.append(f"all weights from `{_data_name(str(model['init_from']))}`")
    if (model.get("vision") or {}).get("weights"):
        starts.append("the vision tower from a weights file")
    if (model.get("text") or {}).get("path"):
        starts.append(f"the text tower from `{_data_name(str(model['text']['path']))}`")
    if model.get("pretrained"):  # an open_clip architecture's weights file
        starts.append(f"open_clip `{model.get('name')}` weights `{_data_name(str(model['pretrained']))}`")
    if model.get("path"):  # a Hugging Face model folder
        starts.append(f"the Hugging Face model `{_data_name(str(model['path']))}`")
    lines = [
        f"- **Data:** {', '.join(f'`{d}`' for d in datasets) or 'not named'}",
        f"- **Loss:** `{loss.get('name')}`" + (f" {json.dumps(loss['kwargs'])}" if loss.get("kwargs") else ""),
        f"- **Schedule:** {train.get('steps')} steps, batch {data.get('batch_size')} per process, "
        f"learning rate {train.get('lr')}, precision {train.get('precision', 'fp32')}",
        f"- **Started from:** {'; '.join(starts) if starts else 'random initialisation'}",
    ]
    return lines


def _results_lines(results: list | None, note: str) -> list[str]:
    if not results:
        return [note or "No evaluation results are recorded for these weights."]
    lines = ["| dataset | task | metric | value |", "|---|---|---|---|"]
    for r in results:
        value = r.metric_value
        shown = f"{100 * value:.2f}%" if isinstance(value, float) and 0 <= value <= 1 else f"{value}"
        lines.append(f"| {r.dataset_name} | {r.task_name or r.task_type} | {r.metric_type} | {shown} |")
    return [*lines, "", note] if note else lines


def _usage(where: str, image_only: bool, open_clip: bool, hub: bool) -> list[str]:
    if image_only:
        mmcl_code = [
            "import mmcl",
            "",
            f'model, _, preprocess = mmcl.load_pretrained("{where}")',
            "features = model.features(preprocess(image).unsqueeze(0))  # backbone features (probes, transfer)",
        ]
    else:
        mmcl_code = [
            "import mmcl",
            "",
            f'model, tokenize, preprocess = mmcl.load_pretrained("{where}")',
            "image_embeds = model.encode_image(preprocess(image).unsqueeze(0))",
            'text_embeds = model.encode_text(**tokenize(["a photo of a cat"]))',
        ]
    lines = [
        "### mmcl",
        "",
        "Weights are in safetensors; loading unpickles nothing and runs no remote code.",
        "",
        "```python",
        *mmcl_code,
        "```",
        "",
        "### open_clip",
        "",
    ]
    if open_clip:
        name = f"hf-hub:{where}" if hub else f"local-dir:{where}"
        lines += [
            "```python",
            "import open_clip",
            "",
            f'model, _, preprocess = open_clip.create_model_and_transforms("{name}")',
            f'tokenizer = open_clip.get_tokenizer("{name}")',
            "```",
        ]
    elif image_only:
        lines.append("An mmcl image encoder has no open_clip form (open_clip models are image-text models).")
    else:
        lines.append(
            f"`mmcl export open_clip {where} OUT` writes it as an open_clip model folder (where open_clip can express "
            "its towers and heads), checked to give the same embeddings."
        )
    return lines


def build_model_card(
    model,
    where: str,
    facts: CardFacts | None = None,
    *,
    open_clip: bool = False,
    hub: bool = False,
    notes: list[str] | None = None,
):
    """The ``huggingface_hub.ModelCard`` of ``model``.

    Args:
        model: a :class:`~mmcl.models.DualEncoder` or :class:`~mmcl.models.ImageEncoder`.
        where: how a reader loads it: a folder path or a Hub repo id (``hub``).
        facts: licence, datasets, base model, results and recipe (:class:`CardFacts`); datasets and
            base model default to the recipe's.
        open_clip: the folder is an open_clip export (its loading code is open_clip's).
        notes: sentences added under the results.
    """
    from huggingface_hub import ModelCard, ModelCardData

    facts = facts or CardFacts()
    image_only = getattr(model, "kind", "") == "image_image"
    name = facts.model_name or Path(where.rstrip("/")).name or "mmcl-model"
    datasets = facts.datasets if facts.datasets is not None else recipe_datasets(facts.recipe)
    base_model = facts.base_model if facts.base_model is not None else recipe_base_models(facts.recipe)
    tags = ["mmcl", "contrastive-learning"] + (
        ["self-supervised-learning"] if image_only else ["clip", "zero-shot-image-classification"]
    )
    data = ModelCardData(
        license=facts.license,
        library_name="open_clip" if open_clip else "mmcl",
        pipeline_tag="image-feature-extraction" if image_only else "zero-shot-image-classification",
        tags=tags + (["mmcl-export"] if open_clip else []),
        datasets=datasets or None,
        base_model=(base_model[0] if len(base_model) == 1 else base_model) or None,
        model_name=name,
        eval_results=facts.eval_results or None,
    )
    body = [
        f"# {name}",
        "",
        _describe(model),
        "",
        "## Training",
        "",
        *_training_lines(facts.recipe, datasets),
        "",
        "## Evaluation",
        "",
        *_results_lines(facts.eval_results, facts.results_note),
        *([""] + list(notes) if notes else []),
        "",
        "## Use it",
        "",
        *_usage(where, image_only, open_clip, hub),
        "",
        "## Licence",
        "",
        f"`{facts.license}`. The training data's licences may restrict what the weights can be used for.",
    ]
    if facts.recipe:
        body += [
            "",
            "## Recipe",
            "",
            "The mmcl recipe these weights were trained with (`mmcl train` takes it as it is):",
            "",
            "```yaml",
            yaml.safe_dump(facts.recipe, sort_keys=False).rstrip(),
            "```",
        ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def write_model_card(
    model,
    out_dir: str | Path,
    where: str | None = None,
    facts: CardFacts | None = None,
    *,
    open_clip: bool = False,
    hub: bool = False,
    license: str | None = None,
    datasets: list[str] | None = None,
    base_model: list[str] | None = None,
    headline: Callable | None = None,
) -> Path:
    """Write ``OUT/README.md`` (and ``OUT/training_recipe.yaml`` when the recipe is known) for
    ``model``. ``facts`` default to what the model's origin gives (:func:`origin_facts`);
    ``license``, ``datasets`` and ``base_model`` override them; ``headline`` picks the metrics of
    a result record (default: :func:`default_headline`)."""
    out = Path(out_dir)
    notes: list[str] = []
    if facts is None:
        facts, notes = origin_facts(model)
        if headline is not None and facts.eval_results and getattr(model, "mmcl_origin", {}).get("kind") == "run":
            facts.eval_results = _reselect(model.mmcl_origin, headline) or facts.eval_results
    facts = dataclasses.replace(
        facts,
        license=license or facts.license,
        datasets=datasets if datasets is not None else facts.datasets,
        base_model=base_model if base_model is not None else facts.base_model,
    )
    card = build_model_card(model, where or str(out), facts, open_clip=open_clip, hub=hub, notes=notes)
    if facts.recipe:
        (out / RECIPE_NAME).write_text(yaml.safe_dump(facts.recipe, sort_keys=False))
    path = out / CARD_NAME
    card.save(path)
    return path


def _reselect(origin: dict, headline: Callable) -> list:
    """The run's results again, with the caller's choice of metrics."""
    try:
        step = int(origin["checkpoint"].name.rsplit("-", 1)[-1])
    except (AttributeError, ValueError):
        return []
    records, _ = _step_results(origin["path"], step)
    return eval_results(records, headline)
