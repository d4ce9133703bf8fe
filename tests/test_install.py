"""The install trap: torchvision must import with the installed torch (timm and open_clip need it)."""


def test_torchvision_timm_open_clip_import_together():
    import open_clip
    import timm
    import torch
    import torchvision

    # The failure mode of a mismatched pair is a missing compiled operator.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)
    assert keep.tolist() == [0]
    assert timm.create_model("resnet10t", num_classes=0) is not None
    assert "ViT-B-32" in open_clip.list_models()


def test_mmcl_imports_without_side_effects(tmp_path):
    """``import mmcl`` (and the CLI module) loads no heavy library, writes no file, changes no
    global state; the public names load on first use."""
    import subprocess
    import sys

    script = (
        "import os, sys, warnings\n"
        "before = set(os.listdir('.'))\n"
        "import mmcl, mmcl.cli\n"
        "heavy = [m for m in ('torch', 'timm', 'transformers', 'accelerate', 'datasets') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
        "assert set(os.listdir('.')) == before, 'files written'\n"
        "assert 'infonce' in mmcl.list_losses() and callable(mmcl.create_model) and callable(mmcl.load_recipe)\n"
        "assert set(mmcl.list_backends()) >= {'timm', 'timm_hf'}\n"
        "print('OK')\n"
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "OK", res.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []
