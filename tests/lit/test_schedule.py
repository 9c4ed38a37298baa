"""Learning-rate multipliers: warm-up, cosine, steps, and the checks on their settings."""

import pytest
import torch

from detector.lit.schedule import make_lr_lambda


def test_warmup_then_cosine():
    f = make_lr_lambda(100, "cosine", warmup_steps=10, warmup_factor=0.1, min_factor=0.05)
    assert f(0) == pytest.approx(0.1)
    assert f(5) < f(9) < f(10)
    assert f(10) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + torch.cos(torch.tensor(0.1 * torch.pi)).item()))
    assert f(100) == pytest.approx(0.05)


def test_steps_and_constant():
    f = make_lr_lambda(100, "step", milestones=(0.5, 0.8), gamma=0.1)
    assert [f(49), f(50), f(80)] == pytest.approx([1.0, 0.1, 0.01])
    assert make_lr_lambda(10, "constant")(7) == 1.0


def test_state_dict_is_plain_numbers():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, make_lr_lambda(10, "cosine", warmup_steps=2))
    state = sched.state_dict()
    assert state["lr_lambdas"] == [{}]  # nothing that would need pickle on load


@pytest.mark.parametrize("kwargs, match", [
    (dict(total_steps=float("inf")), "finite number of training steps"),
    (dict(total_steps=10, schedule="linear"), "lr_schedule"),
    (dict(total_steps=10, warmup_steps=-1), "warmup_steps"),
    (dict(total_steps=10, milestones=(0.8, 0.5)), "lr_milestones"),
    (dict(total_steps=10, gamma=0.0), "lr_gamma"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_lr_lambda(**kwargs)
