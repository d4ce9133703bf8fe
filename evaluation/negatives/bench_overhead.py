"""Wall-clock overhead per training step of the cluster-guided policies against plain InfoNCE.

The quickstart model (recipes/cluster-negatives-quickstart.yaml) takes full training steps
(forward, loss, backward, AdamW) on one fixed batch of 128 real pairs. The arms are timed
INTERLEAVED, round after round, so a change in machine load hits every arm alike; the report
gives each arm's median seconds per step and its ratio to InfoNCE. The cluster state is started
first (the gate opened on real embeddings), so every policy does its full work in the timed steps.
The cluster-aware sampler has no per-step cost (it orders each epoch once, at its start).
Arms with NegCLIP's hard-negative captions (``--arms ... contained+negatives``) take the first
batch of their own data (the same rows, with each row's negative when it carries one this step),
and the negatives go through the text tower with the captions, as in the trainer (or, for the
``-nograd`` arms, by a second pass without gradient: ``data.negatives_grad: false``).

    python evaluation/negatives/bench_overhead.py            # 30 rounds, the loss-only arms
    python evaluation/negatives/bench_overhead.py --arms infonce contained contained+negatives \
        contained+negatives-half contained+negatives-quarter  # the cost of the negative captions
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"  # this benchmark's results folder
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_negatives import ARMS, DEFAULT_ARMS, NEGATIVE_FILES, RECIPE, mmcl  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument(
        "--arms",
        nargs="+",
        # the sampler costs nothing per step (nor does any arm that changes the data, not the loss);
        # the oracle is a ceiling, not a method
        default=[a for a in DEFAULT_ARMS if a != "oracle" and "data" not in ARMS[a]],
    )
    p.add_argument("--results", default=str(RESULTS / "negatives_overhead"))
    args = p.parse_args()
    import os

    os.chdir(ROOT)
    import mmcl as mmcl_lib
    from mmcl.data import Tokenize, build_train_data, image_transforms, load_tokenizer
    from mmcl.data.synthetic import ensure_corpus
    from mmcl.losses.base import call_cross_modal
    from mmcl.models import create_model
    from mmcl.train.optim import create_optimizer
    from mmcl.train.step import image_text_forward

    recipe = mmcl_lib.load_recipe(RECIPE)
    ensure_corpus(recipe.data.synthetic)
    torch.manual_seed(0)
    model = create_model(recipe.model)
    tokenize = Tokenize(load_tokenizer(recipe.model.text), recipe.model.text.max_length)
    train_tf, _ = image_transforms(model.vision.data_config(), recipe.data.augment)
    opt = create_optimizer(model, recipe.train)

    def first_batch(arm: str) -> dict:
        """The first batch of the arm's data: the recipe's, or the arm's negatives file."""
        changes = ARMS[arm].get("data", {})
        for path, options in NEGATIVE_FILES.items():
            if changes.get("train") == str(path.relative_to(ROOT)) and not path.is_file():
                mmcl("data", "make-compositional", "data/shapes-fn/train.csv", str(path), *options)
        over = [f"data.{k}={v}" for k, v in changes.items() if k != "sampler_kwargs"]
        data = build_train_data(mmcl_lib.load_recipe(RECIPE, over).data, train_tf, tokenize, 0, 1, seed=0)
        data.start_epoch(epoch=0, batch_in_epoch=0, progress={})
        return next(iter(data.loader))

    def forward(batch: dict, loss_fn, negatives_grad: bool = True):
        out, text, negatives = image_text_forward(model, batch, negatives_grad)  # as the trainer does
        inputs = getattr(loss_fn, "caption_inputs", None)  # what the trainer hands a masking loss each step
        if inputs is not None:
            setattr(loss_fn, inputs[1], batch[inputs[0]])
        extra = {} if negatives is None else {"text_negatives": negatives}
        return call_cross_modal(loss_fn, out.image_embeds, text, out.logit_scale, **extra)

    losses, batches = {}, {}
    for arm in args.arms:
        spec = ARMS[arm]
        gate = {"gate": 1.0} if "gate" in spec["kwargs"] else {}  # open at once: time the full policy
        losses[arm] = mmcl_lib.create_loss(spec["name"], **{**spec["kwargs"], **gate})
        batches[arm] = first_batch(arm)
        with torch.no_grad():  # open the gate on this batch's real embeddings
            forward(batches[arm], losses[arm])

    def step(arm):
        loss = forward(batches[arm], losses[arm], ARMS[arm].get("data", {}).get("negatives_grad", True))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for arm in args.arms:  # warm-up
        step(arm)
    times = {arm: [] for arm in args.arms}
    for _ in range(args.rounds):
        for arm in args.arms:
            t0 = time.perf_counter()
            step(arm)
            times[arm].append(time.perf_counter() - t0)
    base = statistics.median(times["infonce"]) if "infonce" in times else None
    rows = []
    for arm in args.arms:
        med = statistics.median(times[arm])
        negatives = int(batches[arm]["neg_input_ids"].shape[0]) if "neg_input_ids" in batches[arm] else 0
        rows.append(
            {"arm": arm, "s_per_step": med, "ratio_to_infonce": med / base if base else None, "negatives": negatives}
        )
    out = Path(args.results)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python evaluation/negatives/bench_overhead.py", *sys.argv[1:]])
    info = {"command": command, "rounds": args.rounds, "batch": 128, "threads": torch.get_num_threads(), "rows": rows}
    out.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    lines = [
        "# Cluster-guided negatives: overhead per training step",
        "",
        f"Quickstart model, batch 128, full training step (forward, loss, backward, AdamW), CPU with "
        f"{torch.get_num_threads()} threads; median of {args.rounds} interleaved rounds. Command: `{command}`.",
        "",
        "| arm | negative captions in the batch | s/step | vs infonce |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['arm']} | {r['negatives']} | {r['s_per_step']:.3f} | {r['ratio_to_infonce']:.3f}x |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
