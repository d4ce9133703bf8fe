"""``mmcl report RUN_DIR``: an HTML page, markdown and PNG plots of a run."""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    rp = sub.add_parser(
        "report",
        help="an HTML page and markdown summary with plots of a run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write a self-contained HTML page (report.html), a markdown summary (report.md) and PNG "
        "plots of a run: loss, learning rate, logit scale, throughput, evaluation metrics over steps, a "
        "retrieval recall@k curve and an embedding map of the evaluation images coloured by class or cluster.",
        epilog="The recall@k curve and embedding map encode the recipe's eval.datasets with the run's latest\n"
        "checkpoint; they are skipped, with a note, when either is missing, so a folder holding only\n"
        "metrics.jsonl still gets a report.\n\n"
        "example:\n  mmcl report runs/quickstart\n  mmcl report runs/quickstart --no-embeddings --output /tmp/report",
    )
    rp.add_argument("run_dir", help="a run folder written by `mmcl train`")
    rp.add_argument("--output", help="output folder (default: RUN_DIR/report)")
    rp.add_argument("--no-embeddings", action="store_true", help="skip the recall@k curve and the embedding map")
    rp.add_argument("--checkpoint", help="checkpoint folder to encode with (default: the run's latest)")
    rp.add_argument("--max-images", type=int, default=500, help="images per eval dataset to encode (default 500)")
    rp.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")

    rp.set_defaults(func=run)
    return rp


def run(args) -> int:
    from ..report import write_report

    written = write_report(
        args.run_dir,
        args.output,
        embeddings=not args.no_embeddings,
        checkpoint=args.checkpoint,
        max_images=args.max_images,
        device=args.device,
    )
    for note in written["notes"]:
        print(f"note: {note}")
    for path in (written["html"], written["markdown"], *written["plots"].values()):
        print(f"wrote {path}")
    return 0
