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


def test_mmcl_imports_without_side_effects():
    import mmcl

    assert "infonce" in mmcl.list_losses()
    assert callable(mmcl.create_model) and callable(mmcl.load_recipe)
