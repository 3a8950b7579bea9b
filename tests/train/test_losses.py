import math

import torch

from segany.train import dice_loss, mask_iou, sam_loss, sigmoid_focal_loss


def test_focal_loss_by_hand():
    zeros = torch.zeros(1, 4, 4)
    # logit 0: p = 1/2, cross-entropy ln 2, (1 - p_true)^2 = 1/4; alpha 1/4 for positives, 3/4 for negatives
    assert math.isclose(sigmoid_focal_loss(zeros, torch.ones(1, 4, 4)).item(), 0.25 * 0.25 * math.log(2), rel_tol=1e-6)
    assert math.isclose(sigmoid_focal_loss(zeros, torch.zeros(1, 4, 4)).item(), 0.75 * 0.25 * math.log(2), rel_tol=1e-6)
    confident = torch.full((1, 4, 4), 20.0)
    assert sigmoid_focal_loss(confident, torch.ones(1, 4, 4)).item() < 1e-12


def test_dice_loss_by_hand():
    sure = torch.full((2, 3, 5), 30.0)  # sigmoid = 1
    assert dice_loss(sure, torch.ones(2, 3, 5)).abs().max().item() < 1e-6
    assert torch.allclose(dice_loss(sure, torch.zeros(2, 3, 5)), torch.full((2,), 1 - 1 / 16))
    half = torch.zeros(1, 2, 2)
    target = torch.tensor([[[1.0, 0.0], [0.0, 0.0]]])  # overlap 0.5, total 2 + 1
    assert math.isclose(dice_loss(half, target).item(), 1 - (2 * 0.5 + 1) / (3 + 1), rel_tol=1e-6)


def test_mask_iou_by_hand():
    logits = torch.tensor([[[1.0, 1.0], [-1.0, -1.0]]])
    target = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    assert math.isclose(mask_iou(logits, target).item(), 1 / 3, rel_tol=1e-6)
    assert mask_iou(-logits.abs(), torch.zeros(1, 2, 2)).item() == 1.0  # both empty


def test_only_the_best_mask_is_supervised_and_iou_targets_are_real_ious():
    target = torch.zeros(1, 8, 8)
    target[0, :4] = 1
    good = (target[0] * 2 - 1) * 10  # agrees with the target
    bad = -good
    logits = torch.stack([bad, good, torch.zeros(8, 8)])[None].requires_grad_(True)
    iou = torch.tensor([[0.5, 0.5, 0.5]], requires_grad=True)
    loss, parts = sam_loss(logits, iou, target)
    loss.backward()
    assert parts["best"].tolist() == [1]
    assert logits.grad[0, 0].abs().sum() == 0 and logits.grad[0, 2].abs().sum() == 0
    assert logits.grad[0, 1].abs().sum() > 0
    # IoU of the three masks: 0, 1 and 0 (logit 0 is not > 0): MSE against 0.5 is 0.25
    assert math.isclose(parts["iou"].item(), 0.25, rel_tol=1e-6)
    assert torch.allclose(iou.grad, torch.tensor([[1.0, -1.0, 1.0]]) / 3)
