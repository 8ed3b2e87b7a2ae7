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
    rates = []
    for _ in range(4):
        s.step()
        rates.append(opt.param_groups[0]["lr"])
    assert rates == pytest.approx([0.5, 0.75, 1.0, 1.0])  # one step at a time
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


def test_the_rate_multiplier_of_each_schedule_step_by_step():
    """lr_factor, the one formula every schedule's rate comes from, at the points that define
    each shape (the defaults included: no warm-up, the paper's divide-by-10 every 30 epochs)."""
    from vggnet.training.schedule import lr_factor

    assert lr_factor("constant", 0, 40, 4) == 1.0 == lr_factor("cosine", 0, 40, 4)  # no warm-up
    assert lr_factor("cosine", 20, 40, 4) == pytest.approx(0.5)
    assert lr_factor("cosine", 40, 40, 4) == pytest.approx(0.0)
    # warm-up: linear over its steps, then the schedule from its own start
    assert [lr_factor("cosine", s, 40, 4, warmup_epochs=1) for s in range(4)] == \
        [0.25, 0.5, 0.75, 1.0]
    assert lr_factor("cosine", 22, 40, 4, warmup_epochs=1) == pytest.approx(0.5)
    # step: x gamma every step_epochs epochs (default 30 and 0.1)
    assert lr_factor("step", 59, 200, 2) == 1.0 and lr_factor("step", 60, 200, 2) == 0.1
    assert lr_factor("step", 119, 200, 2) == 0.1
    assert lr_factor("step", 120, 200, 2) == pytest.approx(0.01)
    assert lr_factor("step", 8, 20, 2, step_epochs=4, gamma=0.5) == 0.5
    # onecycle: from 0.1 up to 1 at the peak (a quarter of the run by default), down to 0
    assert lr_factor("onecycle", 0, 100, 10) == pytest.approx(0.1)
    assert lr_factor("onecycle", 25, 100, 10) == pytest.approx(1.0)
    assert lr_factor("onecycle", 100, 100, 10) == 0.0
    assert lr_factor("onecycle", 1, 1, 1) == 0.0  # a one-step run ends at 0 too
    # with a warm-up, the peak is where it ends (warmup_epochs of epochs; epochs default 1)
    assert lr_factor("onecycle", 25, 100, 10, warmup_epochs=0.5) == pytest.approx(0.55)
    assert lr_factor("onecycle", 25, 100, 10, warmup_epochs=2, epochs=4) == pytest.approx(0.55)
    assert lr_factor("onecycle", 75, 100, 10, warmup_epochs=2, epochs=4) == pytest.approx(0.5)


def test_the_plateau_rule_says_when_it_lowered_the_rate():
    """epoch_end answers True exactly when it lowered the rate; a metric equal to the best
    (with no threshold) is no improvement, as in torch's ReduceLROnPlateau; the other
    schedules never lower."""
    opt = _optimizer()
    s = LRSchedule(opt, "plateau", epochs=9, steps_per_epoch=1, patience=1, threshold=0.0)
    assert [s.epoch_end(m) for m in (0.5, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7)] == \
        [False, False, False, True, False, False, True]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.1 ** 2)
    for name in ("cosine", "step", "constant", "onecycle"):
        other = LRSchedule(_optimizer(), name, epochs=9, steps_per_epoch=1, patience=0)
        assert not any(other.epoch_end(m) for m in (0.5, 0.5, 0.5, 0.4))
