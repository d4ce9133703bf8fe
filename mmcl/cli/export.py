"""``mmcl export pretrained|open_clip SRC OUT``: write a model in another format."""

from __future__ import annotations

import argparse
import textwrap

from ..errors import ConfigError

EPILOG = textwrap.dedent("""\
    sources (SRC):
      runs/quickstart                   an mmcl run folder (its latest checkpoint; --checkpoint for another)
      models/quickstart                 an mmcl pretrained folder (written by `mmcl export pretrained`)
      exported/oc                       an open_clip folder (open_clip_config.json + weights)

    Both write a model card (README.md): licence, training datasets, base models, the run's evaluation
    of these weights in the Hub's model-index format, the recipe, and how to load the model.

    examples:
      mmcl export pretrained runs/quickstart models/quickstart
      mmcl export pretrained runs/quickstart models/quickstart --license mit --dataset someone/shapes
      mmcl export open_clip runs/quickstart exported/oc
      mmcl export pretrained exported/oc models/from_open_clip
    """)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``export`` to the ``mmcl`` command's subparsers."""
    p = subparsers.add_parser(
        "export",
        help="write a model as a pretrained folder or an open_clip model",
        description="Write a trained model in another format. Weights are read from safetensors (nothing is "
        "unpickled) and no remote code runs.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    sub = p.add_subparsers(dest="export_format", metavar="FORMAT")
    pre = sub.add_parser(
        "pretrained",
        help="an mmcl pretrained folder (model.safetensors, config.json, tokenizer, preprocessor_config.json)",
        description="Write a self-contained pretrained folder: mmcl.from_pretrained(OUT) loads it.",
    )
    oc = sub.add_parser(
        "open_clip",
        help="an open_clip model folder (open_clip_config.json, weights, model-config JSON, tokenizer)",
        description="Write an open_clip model: open_clip.create_model_and_transforms('local-dir:OUT'), or "
        "open_clip.add_model_config(OUT) then create_model_and_transforms(NAME, pretrained=OUT/WEIGHTS). "
        "Needs a timm vision tower and a BERT/RoBERTa/XLM-R text tower with linear heads.",
    )
    hf = sub.add_parser(
        "hf",
        help="a Hugging Face model folder of the same class (a run of model.backend: hf)",
        description="Write a model trained with model.backend: hf as a transformers folder of its own class "
        "(CLIPModel, SiglipModel, VisionTextDualEncoderModel) with its tokenizer and image processor: "
        "transformers.AutoModel.from_pretrained(OUT) loads it.",
    )
    for q in (pre, oc, hf):
        q.add_argument("src", help="an mmcl run folder, an mmcl pretrained folder or an open_clip folder")
        q.add_argument("out", help="the folder to write")
        q.add_argument("--checkpoint", help="run folders: this checkpoint folder (default: the latest)")
        q.add_argument(
            "--weights",
            choices=["auto", "model", "ema"],
            default="auto",
            help="run folders: the EMA weights or the trained ones (default auto: the EMA when the run kept one, "
            "as training evaluated it)",
        )
    for q in (pre, oc):
        card = q.add_argument_group("model card (README.md)")
        card.add_argument(
            "--license",
            help="the licence id on the card (default: the source folder's card, else apache-2.0); "
            "the training data's licences may call for another",
        )
        card.add_argument(
            "--dataset",
            dest="datasets",
            action="append",
            metavar="NAME",
            help="a training dataset for the card, a Hub id where it has one; repeat for several "
            "(default: the recipe's data.train, by name)",
        )
        card.add_argument(
            "--base-model",
            dest="base_models",
            action="append",
            metavar="REPO_ID",
            help="a Hub model the weights started from; repeat for several (default: the recipe's, where Hub ids)",
        )
        card.add_argument("--no-card", action="store_true", help="write no README.md")
    oc.add_argument("--name", help="model-config name for open_clip.add_model_config (default: OUT's folder name)")
    oc.add_argument(
        "--format",
        choices=["safetensors", "bin"],
        default="safetensors",
        help="weights file: open_clip_model.safetensors (default) or open_clip_pytorch_model.bin",
    )
    oc.add_argument(
        "--hf-model-name",
        help="what text_cfg.hf_model_name names (default: OUT/text by absolute path; a Hub id to publish)",
    )
    oc.add_argument("--no-verify", action="store_true", help="skip building the export with open_clip to compare")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    from pathlib import Path

    from ..models.pretrained import from_pretrained

    if getattr(args, "export_format", None) is None:
        raise ConfigError("mmcl export needs a format: pretrained, open_clip or hf (see mmcl export --help)")
    ema = {"auto": None, "model": False, "ema": True}[args.weights]
    if (args.checkpoint or args.weights != "auto") and not (Path(args.src) / "recipe.yaml").is_file():
        raise ConfigError("--checkpoint and --weights are for mmcl run folders")
    from ..eval.tasks import headline
    from ..models.adapters import merge_adapters

    model = merge_adapters(from_pretrained(args.src, checkpoint=args.checkpoint, ema=ema))  # LoRA: plain weights
    if args.export_format == "hf":  # transformers' own folder (its config, tokenizer, image processor); no card yet
        from ..models.backends import get_backend
        from ..models.hf_clip import export_hf

        out = export_hf(model, get_backend(model.cfg).tokenizer(model.cfg, model), args.out)
        print(f"wrote {out}: transformers.AutoModel.from_pretrained({str(out)!r}) loads it")
        return 0
    card = {"license": args.license, "datasets": args.datasets, "base_model": args.base_models, "headline": headline}
    if args.export_format == "pretrained":
        out = model.save_pretrained(args.out, model_card=not args.no_card, **card)
        print(f"wrote {out}: mmcl.from_pretrained({str(out)!r}) loads it")
        if not args.no_card:
            print(f"  model card: {out / 'README.md'}")
        return 0
    from ..interop.open_clip import export_open_clip

    result = export_open_clip(
        model,
        args.out,
        name=args.name,
        weights_format=args.format,
        hf_model_name=args.hf_model_name,
        verify=not args.no_verify,
    )
    out = result["dir"]
    pp = result["preprocess_cfg"]
    lines = [
        f"wrote {out} ({result['weights'].name}, {result['model_config'].name})",
        f"  open_clip.create_model_and_transforms('local-dir:{out}')",
        f"  or: open_clip.add_model_config('{out}'); open_clip.create_model_and_transforms('{result['name']}', "
        f"pretrained='{result['weights']}', image_mean={tuple(pp['mean'])}, image_std={tuple(pp['std'])}, "
        f"image_interpolation='{pp['interpolation']}')",
    ]
    if "max_abs_diff" in result:
        lines.append(
            f"  checked: open_clip's embeddings match mmcl's (max abs difference {result['max_abs_diff']:.2g})"
        )
    if not args.no_card:
        from ..models.card import write_model_card

        lines.append(f"  model card: {write_model_card(model, out, open_clip=True, **card)}")
    print("\n".join(lines))
    return 0
