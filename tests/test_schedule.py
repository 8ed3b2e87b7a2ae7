"""The learning-rate schedule is one object: the plateau rule really lowers the rate, and what
the history logs is the optimizer's rate."""

import json

import pytest
import torch

from vggnet.training.config import resolve
from vggnet.training.loop import train
from vggnet.errors import ConfigError
from vggnet.training.schedule import LRSchedule, progressive_size, progressive_sizes

from helpers import make_folder_dataset


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def test_plateau_rule_is_torchs_reduce_lr_on_plateau():
    """The same metric sequence lowers the rate at the same epochs as torch's own scheduler."""
    metrics = [0.1, 0.2, 0.2, 0.2, 0.2, 0.25, 0.25, 0.25, 0.25, 0.25, 0.3, 0.3, 0.3, 0.3]
    ours, ref_opt = _optimizer(), _optimizer()
    schedule = LRSchedule(ours, "plateau", epochs=len(metrics), steps_per_epoch=5, gamma=0.1,
                          patience=2)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(ref_opt, mode="max", factor=0.1, patience=2)
    for m in metrics:
        for _ in range(5):
            schedule.step()
        schedule.epoch_end(m)
        ref.step(m)
        assert ours.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    assert ours.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 3)  # lowered 3 times


def test_plateau_with_warmup_keeps_both():
    """Warm-up is per step, the plateau rule per epoch: neither undoes the other."""
    opt = _optimizer(1.0)
    s = LRSchedule(opt, "plateau", epochs=10, steps_per_epoch=4, warmup_epochs=1, patience=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # first warm-up step
    for _ in range(4):
        s.step()
    s.epoch_end(0.5)
    s.epoch_end(0.5)  # no improvement, patience 0: lowered
    for _ in range(3):
        s.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.1)  # warm-up over, lowered once


def test_schedule_state_round_trip():
    opt = _optimizer()
    s = LRSchedule(opt, "plateau", epochs=5, steps_per_epoch=3, patience=0)
    for m in (0.5, 0.5, 0.5):
        s.epoch_end(m)
    saved = s.state_dict()
    opt2 = _optimizer()
    s2 = LRSchedule(opt2, "plateau", epochs=5, steps_per_epoch=3, patience=0)
    s2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"]) == \
        pytest.approx(0.1 * 0.1 ** 2)
    assert s2.epoch_end(0.5) and opt2.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 3)


def test_a_run_whose_accuracy_stalls_ends_at_lr_times_gamma_to_the_k(tmp_path):
    """A frozen backbone (its batch norm in eval mode) and a head that cannot move (lr 1e-9):
    the test accuracy is the same every epoch, so with patience 2 the rate must fall after
    epochs 4 and 7. Before the fix, a LambdaLR reset the rate every step and it never fell,
    while the log claimed it had."""
    out = tmp_path / "run"
    cfg = resolve(None, dict(data="digits", model="vgg11_bn", width=0.25, head="linear",
                             batch_size=256, lr=1e-9, schedule="plateau", plateau_patience=2,
                             step_gamma=0.1, freeze="features", epochs=7, flip=False,
                             crop_padding=0, progress=False, out=str(out)))
    train(cfg)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len({h["test_top1"] for h in history}) == 1  # it really stalled
    state = torch.load(out / "last.state.pt", weights_only=True)
    lrs = [g["lr"] for g in state["optimizer"]["param_groups"]]
    assert lrs == [pytest.approx(1e-9 * 0.1 ** 2)] * len(lrs)
    # the logged rate is the one each epoch ran with: lowered after epoch 4, again after 7
    assert [h["lr"] for h in history] == pytest.approx([1e-9] * 4 + [1e-10] * 3)


def test_progressive_sizes_grow_in_steps_to_the_final_crop_and_keep_it():
    sizes = [progressive_size(e, 8, 64, 96) for e in range(8)]
    assert sizes == [64, 72, 72, 80, 88, 88, 96, 96]  # 6 of 8 epochs ramp, multiples of 8
    assert progressive_size(0, 5, 96, 96) == 96  # start == final: no ramp
    sizes = progressive_sizes(8, 64, 96, (96, 128))
    crop, (s_min, s_max) = sizes(0)
    assert crop == 64 and (s_min, s_max) == (64, 85)  # S shrunk with the crop: S / crop kept
    assert sizes(7) == (96, (96, 128))
    # the ramp's length is a share of the run, at least one epoch
    assert [progressive_size(e, 2, 16, 32, ramp=0.5) for e in range(2)] == [16, 32]
    assert [progressive_size(e, 4, 16, 32, ramp=0.5) for e in range(4)] == [16, 24, 32, 32]
    assert progressive_size(0, 1, 16, 32) == 16 and progressive_size(1, 1, 16, 32) == 32
    short = progressive_sizes(4, 16, 32, None, ramp=0.5)
    assert [short(e) for e in range(4)] == [(16, None), (24, None), (32, None), (32, None)]


def test_a_progressive_run_trains_at_growing_crops_and_resumes_at_the_same_ones(tmp_path):
    """Each epoch's crop is a function of the epoch alone, so a run stopped after epoch 1 and
    resumed trains epochs 2 and 3 at the sizes the whole run would have (and logs them)."""
    root = make_folder_dataset(tmp_path / "data", per_class=8, sizes=((80, 80),))
    common = dict(data=str(root), model="vgg11_bn", width=0.125, scale=64, scale_max=80,
                  crop_size=64, crop_start=32, crop_ramp=0.75, epochs=3, batch_size=8,
                  val_fraction=0.25, progress=False, tta=False)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(resolve(None, dict(common, out=str(whole))))
    train(resolve(None, dict(common, out=str(parts), stop_after=1)))
    train(resolve(None, dict(common, out=str(parts), resume=True)))
    for out in (whole, parts):
        history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        assert [h["crop"] for h in history] == [32, 48, 64]  # ramp of round(0.75 * 3) = 2


@pytest.mark.parametrize("bad, message", [
    (dict(scale=None), "needs scale and crop_size"),
    (dict(crop_start=48), "between 32 and crop_size"),
    (dict(crop_start=16), "between 32 and crop_size"),
    (dict(crop_ramp=0), "fraction of the epochs"),
])
def test_progressive_resizing_settings_that_cannot_work_are_named(bad, message):
    cfg = dict(data="digits", scale=40, crop_size=40, crop_start=32, progress=False)
    with pytest.raises(ConfigError, match=message):
        resolve(None, dict(cfg, **bad))


def test_a_resumed_schedule_keeps_the_base_rates_it_was_saved_with():
    """The rates follow the saved base rates (a run resumed with another --lr continues on
    its own schedule); a state saved before base rates were kept leaves the optimizer's."""
    def schedule(lr):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        return LRSchedule(opt, "cosine", epochs=2, steps_per_epoch=5), opt

    first, _ = schedule(0.4)
    for _ in range(3):
        first.step()
    state = first.state_dict()
    again, opt = schedule(0.1)
    again.load_state_dict(state)
    assert again.base_lrs == [0.4] and opt.param_groups[0]["lr"] == pytest.approx(
        0.4 * first.factor())
    old = {k: v for k, v in state.items() if k != "base_lrs"}
    third, opt = schedule(0.1)
    third.load_state_dict(old)
    assert third.base_lrs == [0.1] and opt.param_groups[0]["lr"] == pytest.approx(
        0.1 * first.factor())
