"""TrainState on its own: everything a run needs to continue exactly goes through one
state_dict, back into a fresh state, through a file that only tensors and plain values can
be read from; a resume that would silently drop an average or a Lookahead is refused."""

import pickle

import pytest
import torch
import torch.nn as nn

from vggnet.errors import ConfigError, WeightsError
from vggnet.training.averaging import Lookahead
from vggnet.training.schedule import LRSchedule
from vggnet.training.state import TrainState, load_state, save_state


def _state(seed, ema=False, lookahead=False):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = LRSchedule(opt, "cosine", epochs=3, steps_per_epoch=4)
    avg = torch.optim.swa_utils.AveragedModel(model) if ema else None
    la = Lookahead(model, k=2, alpha=0.5) if lookahead else None
    return TrainState(model, opt, sched, torch.Generator().manual_seed(seed), ema=avg,
                      lookahead=la)


def _advance(state):
    state.optimizer.zero_grad()
    x = torch.randn(8, 3, generator=state.data_gen) + torch.rand(1)  # both RNGs drawn
    loss = state.model(x).square().mean()
    loss.backward()
    state.optimizer.step()
    state.schedule.step()
    if state.ema is not None:
        state.ema.update_parameters(state.model)
    if state.lookahead is not None:
        state.lookahead.step()
    state.epoch, state.step, state.best_top1 = 2, 3, 55.5
    state.history.append({"epoch": 1, "top1": 55.5})
    state.partial = {"loss_sum": 1.25, "seen": 8}


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("ema, lookahead", [(False, False), (True, False), (False, True)])
def test_a_state_goes_through_a_file_into_a_fresh_one_and_continues_identically(tmp_path, ema,
                                                                                lookahead):
    a = _state(0, ema, lookahead)
    _advance(a)
    saved = a.state_dict()
    assert ("ema" in saved) is ema and ("lookahead" in saved) is lookahead
    path = save_state(tmp_path / "last.state.pt", saved)
    assert path == tmp_path / "last.state.pt"
    b = _state(1, ema, lookahead)  # other weights, other RNG
    torch.manual_seed(123)
    b.load_state_dict(load_state(path))
    assert _equal(b.state_dict(), saved)
    assert (b.epoch, b.step, b.best_top1, b.history, b.partial) == (
        2, 3, 55.5, [{"epoch": 1, "top1": 55.5}], {"loss_sum": 1.25, "seen": 8})
    assert b.optimizer.param_groups[0]["lr"] == a.optimizer.param_groups[0]["lr"]
    after_load = torch.rand(3)  # the global RNG continues where the run left it
    torch.set_rng_state(saved["torch_rng"])
    assert torch.equal(after_load, torch.rand(3))
    torch.set_rng_state(saved["torch_rng"])
    _advance(a)
    b.load_state_dict(load_state(path))
    _advance(b)
    assert _equal(a.state_dict()["model"], b.state_dict()["model"])


def test_what_is_evaluated_is_the_average_when_there_is_one():
    plain, averaged = _state(0), _state(0, ema=True)
    assert plain.eval_model is plain.model
    assert averaged.eval_model is averaged.ema.module


def test_an_unfinished_epoch_is_kept_only_when_there_is_one():
    s = _state(0)
    assert "partial" not in s.state_dict() and s.state_dict()["step"] == 0
    s.partial = {"seen": 3}
    assert s.state_dict()["partial"] == {"seen": 3}
    fresh = _state(0)
    fresh.partial = {"stale": 1}
    state = s.state_dict()
    del state["partial"], state["step"]  # a state saved at an epoch's end by an older vggnet
    fresh.load_state_dict(state)
    assert fresh.partial is None and fresh.step == 0


@pytest.mark.parametrize("now, then, flag", [(dict(ema=True), {}, "--ema 0"),
                                             (dict(lookahead=True), {}, "--lookahead 0")])
def test_a_resume_that_would_drop_an_average_is_refused(now, then, flag):
    with pytest.raises(ConfigError, match=flag):
        _state(0, **now).load_state_dict(_state(0, **then).state_dict())


def test_state_files_that_cannot_be_trusted_are_one_line_errors(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"schedule": Evil()}, f, protocol=2)
    with pytest.raises(WeightsError, match=f"^cannot resume from {evil}: UnpicklingError"):
        load_state(evil)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"")
    with pytest.raises(WeightsError) as info:
        load_state(broken)
    assert "\n" not in str(info.value) and str(broken) in str(info.value)
    old = tmp_path / "old.pt"
    torch.save({"model": {}, "scheduler": {}}, old)
    with pytest.raises(WeightsError, match="before 0.2 .* --weights"):
        load_state(old)
