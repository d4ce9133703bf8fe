"""Why WiSE-FT fails in bench_wise_ft.py: the BatchNorm running statistics.

Re-evaluates seed 0 of bench_wise_ft.py (its runs in ``--work``) on the photo test set, once with
the mixed weights as ``mmcl wise-ft`` builds them (running statistics mixed too) and once with the
same weights but the start's running statistics.

    python evaluation/finetune/bn_stats_check.py     # after bench_wise_ft.py; ~1 min

Writes evaluation/finetune/results/bn_stats_check.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

import bench_wise_ft as wise  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/mmcl-bench-finetune", help="bench_wise_ft.py's --work")
    args = p.parse_args()
    from mmcl.eval.adapters import MmclAdapter
    from mmcl.eval.runner import evaluate
    from mmcl.models.wise_ft import interpolated_model, start_model
    from mmcl.recipe import EvalConfig, EvalDatasetConfig

    root, run = Path(args.work) / "shapes", Path(args.work) / "finetune-0"
    cfg = EvalConfig(
        batch_size=128, datasets=[EvalDatasetConfig(**wise.dataset("photo-test", root / "test.csv", root))]
    )
    adapter = MmclAdapter.from_run(run, device="cpu")
    tuned, (start, _) = adapter.model, start_model(run)
    rows = []
    for alpha in wise.ALPHAS:
        row = {"alpha": alpha}
        for mode in ("mixed_statistics", "start_statistics"):
            model = interpolated_model(start, tuned, alpha)
            if mode == "start_statistics":
                weights, first = model.state_dict(), start.state_dict()
                weights.update({k: first[k].clone() for k in weights if "running_" in k})
                model.load_state_dict(weights)
            adapter.model = model.eval()
            row[mode] = evaluate(adapter, cfg, progress=False)[0]["metrics"]["acc1"]
        rows.append(row)
        print(row, flush=True)
    out = HERE / "results" / "bn_stats_check.json"
    out.write_text(json.dumps({"run": "bench_wise_ft.py seed 0", "photo_test_zeroshot_acc1": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
