"""``mmcl data TOOL``: make-synthetic, make-compositional, convert, inspect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("data", help="data tools", description="Data tools.")
    dsub = d.add_subparsers(dest="data_command", metavar="TOOL")
    for add in (_make_synthetic, _make_compositional, _convert, _inspect):
        add(dsub)
    d.set_defaults(func=run, data_parser=d)
    return d


def _make_synthetic(dsub) -> None:
    ms = dsub.add_parser(
        "make-synthetic",
        help="write the generated shapes corpus (images + CSV) to a folder",
        description="Write the generated captioned-shapes corpus: train/test/novel PNG folders, one CSV per split "
        "(filepath,title,label,key), classnames.txt and templates.txt. Deterministic for a seed.",
    )
    ms.add_argument("out_dir", help="output folder")
    ms.add_argument("--n-train", type=int, default=20000, help="training pairs (default 20000)")
    ms.add_argument("--n-test", type=int, default=1000, help="held-out pairs, unseen images (default 1000)")
    ms.add_argument(
        "--n-novel",
        type=int,
        default=1000,
        help="held-out pairs whose first object is a colour-shape combination never seen in training (default 1000)",
    )
    ms.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    ms.add_argument("--single-fraction", type=float, default=0.3, help="fraction of one-object scenes (default 0.3)")
    ms.add_argument(
        "--max-objects",
        type=int,
        default=2,
        choices=range(2, 10),
        metavar="{2..9}",
        help="the other scenes hold 2..N objects, one per cell of a 3x3 grid (default 2)",
    )
    ms.add_argument(
        "--short-caption-prob",
        type=float,
        default=0.2,
        help="fraction of short captions ('a red circle'), true of every image of their class (default 0.2)",
    )
    ms.add_argument(
        "--sketch", action="store_true", help="also draw each scene as a line sketch (column sketch): paired images"
    )
    ms.add_argument(
        "--masks",
        action="store_true",
        help="also write each scene's segmentation mask (column mask; 0 background, 1 + class): for dense_probe",
    )
    ms.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def _make_compositional(dsub) -> None:
    mc = dsub.add_parser(
        "make-compositional",
        help="write hard-negative caption items for a shapes-corpus split (or from SugarCrepe's / ARO's files)",
        description="Write compositional items (image, true caption, one hard negative, type) for a split of the "
        "generated shapes corpus (the offline demo). Negative types: replace_colour, replace_shape, swap_colours, "
        "swap_relation. With --benchmark, write the items of SugarCrepe or one of ARO's sets, read in its own "
        "files, as an items file (ARO's VG crops beside it). Benchmarks are scored by their own definitions "
        "when evaluated by name: mmcl eval compositional --dataset NAME --data-root DIR.",
        epilog="examples:\n  mmcl data make-compositional data/shapes/test.csv data/shapes/compositional.jsonl\n"
        "  mmcl data make-compositional --benchmark sugar_crepe /data/sugar_crepe sugar_crepe.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mc.add_argument(
        "csv",
        help="a split CSV from make-synthetic (needs its key column); with --benchmark, the benchmark's data root",
    )
    mc.add_argument("out", help="output file: .jsonl (default) or .csv")
    mc.add_argument(
        "--benchmark",
        help="read a compositional benchmark in its own files instead: sugar_crepe, vg_relation, vg_attribution, "
        "coco_order, flickr30k_order",
    )
    mc.add_argument("--seed", type=int, default=0, help="seed of the replacement draws (default 0)")
    mc.add_argument(
        "--merge",
        action="store_true",
        help="one row per image with all its negatives: training data for NegCLIP-style fine-tuning "
        "(data.negatives_key: negatives)",
    )
    mc.add_argument(
        "--keep-captions",
        action="store_true",
        help="with --merge: keep each row's own caption (title) instead of the canonical one rendered from its "
        "key; the negatives are the same kinds of edits made to that caption's own words",
    )
    mc.add_argument(
        "--prefer",
        nargs="+",
        default=[],
        choices=["replace_colour", "replace_shape", "swap_colours", "swap_relation"],
        metavar="TYPE",
        help="with --merge: keep only these types of negative where a row has one, all its negatives otherwise "
        "(choices: replace_colour, replace_shape, swap_colours, swap_relation)",
    )


def _convert(dsub) -> None:
    cv = dsub.add_parser(
        "convert",
        help="write a CSV/TSV/JSONL file or an image folder as WebDataset shards",
        description="Write WebDataset shards in img2dataset's layout ({key}.jpg/.png/.webp, .txt with one caption "
        "per line, .json, .cls) plus sizes.json and stats.json. Original image bytes are kept; unreadable "
        "images, missing files and caption-less images are skipped and counted.",
        epilog="example:\n  mmcl data convert data/shapes/train.csv data/shapes-wds --shard-size 1000\n"
        "  then train with data.train=data/shapes-wds",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cv.add_argument("src", help="a CSV/TSV/JSONL file (rows sharing an image are its captions) or an image folder")
    cv.add_argument("out", help="output folder (must not already hold shards)")
    cv.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default 1000)")
    cv.add_argument("--source", default="auto", choices=["auto", "csv", "jsonl", "folder"], help="input format")
    cv.add_argument("--image-key", help="image path column (default filepath)")
    cv.add_argument("--caption-key", help="caption column (default title)")
    cv.add_argument("--label-key", help="integer label column, written as .cls (optional)")
    cv.add_argument(
        "--caption-template",
        default="a photo of a {c}.",
        help="folders: caption each image with its class name in this template (default 'a photo of a {c}.'); "
        "'' writes no caption",
    )
    cv.add_argument("--image-root", help="base folder for relative image paths (default: the file's folder)")
    cv.add_argument("--caption-separator", help="split each caption cell on this into several captions ('|')")
    cv.add_argument("--no-progress", action="store_true", help="no progress bar")


def _inspect(dsub) -> None:
    ins = dsub.add_parser(
        "inspect",
        help="count a dataset's samples and skips, caption and image statistics, and draw a sample grid",
        description="Read a dataset as training and evaluation would (CSV/TSV/JSONL, image folder, WebDataset "
        "shards or Hugging Face dataset) and report: images, captions, skipped samples per reason, caption "
        "length and image size statistics, class counts; optionally a PNG grid of samples with captions.",
        epilog="example:\n  mmcl data inspect data/shapes-wds --grid shapes.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ins.add_argument("path", help="dataset path (file, folder, shard pattern)")
    ins.add_argument(
        "--kind",
        default="auto",
        help="the data source reading it: auto (from the path), csv, jsonl, folder, hf, wds, or another "
        "registered one (mmcl.list_sources())",
    )
    ins.add_argument("--split", default="train", help="split of a WebDataset benchmark folder or HF dataset")
    ins.add_argument("--image-key", help="image column")
    ins.add_argument("--caption-key", help="caption column (WebDataset: member extension, default txt)")
    ins.add_argument("--label-key", help="label column")
    ins.add_argument("--max-items", type=int, help="read at most this many images")
    ins.add_argument("--grid", help="write a PNG grid of samples here")
    ins.add_argument("--grid-size", type=int, default=16, help="samples in the grid (default 16)")
    ins.add_argument("--json", help="also write the report as JSON here")
    ins.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    if args.data_command == "convert":
        from ..data.convert import convert_to_wds

        stats = convert_to_wds(
            args.src,
            args.out,
            args.source,
            args.shard_size,
            args.image_key,
            args.caption_key,
            args.label_key,
            args.caption_template or None,
            progress=not args.no_progress,
            image_root=args.image_root,
            caption_separator=args.caption_separator,
        )
        skipped = ", ".join(f"{k}={v}" for k, v in stats["skipped"].items()) or "none"
        print(f"wrote {stats['samples']} samples in {stats['shards']} shards to {args.out} (skipped: {skipped})")
        return 0
    if args.data_command == "inspect":
        from ..data.inspect import format_report, inspect_dataset

        keys = {
            k: v
            for k, v in (
                ("image_key", args.image_key),
                ("caption_key", args.caption_key),
                ("label_key", args.label_key),
            )
            if v
        }
        report = inspect_dataset(
            args.path,
            args.kind,
            args.max_items,
            args.grid,
            args.grid_size,
            progress=not args.no_progress,
            split=args.split,
            **keys,
        )
        print(format_report(report))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 0
    if args.data_command == "make-compositional":
        from ..eval.compositional import benchmark_items, shapes_compositional_items

        if args.benchmark is not None:
            if args.merge or args.keep_captions or args.prefer:
                raise ConfigError("--merge, --keep-captions and --prefer apply to the shapes corpus, not --benchmark")
            counts = benchmark_items(args.benchmark, args.csv, args.out)
            print(f"wrote {args.out}: {sum(counts.values())} items of {args.benchmark} ({len(counts)} types)")
            return 0

        if args.keep_captions and not args.merge:
            raise ConfigError("--keep-captions applies to --merge (training data); add --merge or drop it")
        if args.prefer and not args.merge:
            raise ConfigError("--prefer applies to --merge (training data); add --merge or drop it")
        counts = shapes_compositional_items(
            args.csv,
            args.out,
            seed=args.seed,
            merge=args.merge,
            keep_captions=args.keep_captions,
            prefer=tuple(args.prefer),
        )
        print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        return 0
    if args.data_command != "make-synthetic":
        args.data_parser.print_help()
        return 2
    from ..data.synthetic import SyntheticConfig, make_corpus

    cfg = SyntheticConfig(
        root=args.out_dir,
        n_train=args.n_train,
        n_test=args.n_test,
        n_novel=args.n_novel,
        image_size=args.image_size,
        single_fraction=args.single_fraction,
        max_objects=args.max_objects,
        short_caption_prob=args.short_caption_prob,
        sketch=args.sketch,
        masks=args.masks,
        seed=args.seed,
    )
    root = make_corpus(cfg)
    print(
        f"wrote {root}: train.csv ({cfg.n_train}), test.csv ({cfg.n_test}), novel.csv ({cfg.n_novel}), "
        "classnames.txt, templates.txt"
    )
    return 0
