"""Small real images of every awkward kind, written on the fly."""

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, mode: str = "RGB", size=(40, 30), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "I;16":
        arr = rng.integers(0, 65535, (h, w), dtype=np.uint16)
        Image.fromarray(arr).save(path)
        return path
    base = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "P":
        base = base.convert("P", palette=Image.ADAPTIVE)
    elif mode != "RGB":
        base = base.convert(mode)
    base.save(path)
    return path


def photo_folder(root, per_class=6, junk=True):
    """Class folders of JPEGs of many sizes and shapes, with what real collections hold: a
    greyscale PNG, a CMYK JPEG, an EXIF-rotated photo, a PNG with alpha, a text file and a
    file that only claims to be a JPEG."""
    sizes = [(400, 300), (300, 500), (640, 480), (256, 256), (333, 222), (180, 260)]
    for c, name in enumerate(("cat", "dog", "fox")):
        for i in range(per_class):
            write_image(root / name / f"{i}.jpg", size=sizes[(i + c) % len(sizes)],
                        seed=10 * c + i)
    write_image(root / "cat" / "grey.png", mode="L", size=(300, 200))
    write_image(root / "dog" / "alpha.png", mode="RGBA", size=(260, 300), seed=7)
    Image.new("CMYK", (250, 350), (10, 120, 30, 0)).save(root / "dog" / "cmyk.jpg")
    im = Image.fromarray(np.full((200, 300, 3), 90, np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    im.save(root / "fox" / "rotated.jpg", exif=exif)
    if junk:
        (root / "fox" / "notes.txt").write_text("not an image")
        (root / "fox" / "broken.jpg").write_bytes(b"not a jpeg at all")
    return root


def make_folder_dataset(root: Path, classes=("cat", "dog"), per_class=6, sizes=((40, 30), (24, 24))):
    for ci, c in enumerate(classes):
        for i in range(per_class):
            write_image(root / c / f"{i}.png", size=sizes[i % len(sizes)], seed=ci * 100 + i)
    return root


_TINY_RUN: list[Path] = []  # the one trained in this test session, copied for each caller


def train_tiny_run(out: Path, fresh: bool = False) -> Path:
    """A real run in ``out``: a width-1/8 VGG-11-BN trained one epoch on the bundled digits,
    with every file a run directory holds. It is trained once per test session (seconds,
    offline) and copied for each caller, so a test that exports into its run or changes it
    changes no other test's. ``fresh``: train this one anew (a test of the training
    itself, e.g. under mocked CPU features)."""
    import shutil
    import tempfile

    from vggnet.training.config import resolve
    from vggnet.training.loop import train

    if fresh or not _TINY_RUN or not (_TINY_RUN[0] / "best.safetensors").is_file():
        first = Path(out if fresh else Path(tempfile.mkdtemp(prefix="vggnet-tiny-run-")) / "run")
        train(resolve(None, dict(data="digits", width=0.125, epochs=1, flip=False,
                                 progress=False, out=str(first))))
        if fresh:
            return first
        _TINY_RUN[:] = [first]
    shutil.copytree(_TINY_RUN[0], out, dirs_exist_ok=True)
    return Path(out)


def serve_images(folder: Path) -> list[Path]:
    """Three images a service must take: a small PNG, a larger JPEG, a tiny 8 x 8 PNG."""
    return [write_image(folder / f"{i}.{ext}", size=size, seed=i)
            for i, (ext, size) in enumerate([("png", (40, 30)), ("jpg", (300, 200)),
                                             ("png", (8, 8))])]


def prometheus_value(text: str, name: str, **labels) -> float:
    """The value of metric ``name`` with these labels in a Prometheus text page (0 if absent)."""
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            if line.split("{")[0].split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def run_stopped_and_resumed(cfg: dict, tmp_path, stop_after: int):
    """Trains ``cfg`` in one go (run a) and stopped after ``stop_after`` epochs then resumed
    (run b); asserts both give the same history and weights. Returns run a and its model."""
    import torch
    from vggnet.run import load_checkpoint
    from vggnet.training.config import resolve
    from vggnet.training.loop import train

    full = train(resolve(None, {**cfg, "out": str(tmp_path / "a")}))
    first = train(resolve(None, {**cfg, "out": str(tmp_path / "b"), "stop_after": stop_after}))
    assert first.interrupted
    resumed = train(resolve(None, {**cfg, "out": str(tmp_path / "b"), "resume": True}))
    assert [h["test_loss"] for h in resumed.history] == [h["test_loss"] for h in full.history]
    a, _ = load_checkpoint(tmp_path / "a", which="last")
    b, _ = load_checkpoint(tmp_path / "b", which="last")
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    assert full.best_top1 > 0.8
    return full, a


def with_bn_stats(model, size: int = 32):
    """The model in eval mode with non-trivial batch-norm statistics, as after training."""
    import torch

    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, size, size) * 2 + 0.5)
    return model.eval()


# --- real processes without a fresh interpreter each ---------------------------------------

def _cli_child(args: list, env: dict, log: str) -> None:
    """In the child: the parent's environment, output to ``log``, then ``vggnet ARGS``."""
    import os
    import sys

    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    from vggnet.cli import main

    code = main(args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


class CliProcess:
    """``vggnet ARGS`` in a real process of its own, forked from a server that has imported
    torch and vggnet once (multiprocessing's forkserver, which has computed nothing, so the
    fork is safe): each start costs milliseconds instead of a new interpreter's seconds.
    It dies of a real SIGKILL like any process; :attr:`returncode` is ``-9`` then. The
    interface is Popen's, as far as the tests use it."""

    _context = None

    def __init__(self, args, env: dict, log: Path):
        import multiprocessing

        if CliProcess._context is None:
            CliProcess._context = multiprocessing.get_context("forkserver")
            # also what every training run imports on its way (1.6 s for inductor, which
            # torch.use_deterministic_algorithms loads)
            CliProcess._context.set_forkserver_preload(["torch", "vggnet.cli",
                                                        "vggnet.training.loop",
                                                        "torch._inductor"])
        self.log = Path(log)
        self.log.write_text("")
        self.process = CliProcess._context.Process(
            target=_cli_child, args=([str(a) for a in args], dict(env), str(self.log)))
        self.process.start()
        self.pid = self.process.pid

    @property
    def returncode(self):
        return self.process.exitcode

    def poll(self):
        return self.process.exitcode

    def wait(self, timeout=None):
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise TimeoutError(f"vggnet still runs after {timeout} s:\n{self.output}")
        return self.process.exitcode

    def kill(self):
        self.process.kill()

    @property
    def output(self) -> str:
        return self.log.read_text()


def keras_legacy_file(path, names_style="2016", theano=False):
    """A file laid out as keras.applications' 2016 download (``block1_conv1_W_1:0``), with
    random VGG16 convolution weights and no top."""
    import h5py

    from vggnet.models.configs import CONFIGS, conv_spec

    rng = np.random.default_rng(0)
    cin, block, index, layers = 3, 1, 0, []
    with h5py.File(path, "w") as f:
        for token in CONFIGS["D"]:
            if token == "M":
                block, index = block + 1, 0
                continue
            out, k = conv_spec(token)
            index += 1
            name = f"block{block}_conv{index}"
            shape = (out, cin, k, k) if theano else (k, k, cin, out)
            g = f.create_group(name)
            g.create_dataset(f"{name}_W_1:0", data=rng.standard_normal(shape, dtype=np.float32))
            g.create_dataset(f"{name}_b_1:0", data=rng.standard_normal(out, dtype=np.float32))
            g.attrs["weight_names"] = [f"{name}_W_1:0".encode(), f"{name}_b_1:0".encode()]
            layers.append(name.encode())
            cin = out
        f.attrs["layer_names"] = layers
    return path
