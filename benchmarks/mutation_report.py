"""The mutation score of each module `make mutation` mutates, from mutmut's results in
mutants/, with every surviving mutant and what was decided about it.

    make mutation && .venv/bin/python benchmarks/mutation_report.py

writes benchmarks/results/mutation.json and prints the table of docs/development.md.
A survivor is either killed by a new test (then it no longer survives) or listed in
EQUIVALENT below with the reason no test can tell it from the original; the score leaves
the equivalent ones out. A timeout (a mutant that loops or waits for ever) counts as
killed: the test would fail by its own timeout.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "mutation.json"

# mutant name -> why no test can tell it from the original
_GAP = ("reducing_gap only speeds up large reductions: at 3, 4 or none the output is the "
        "same (test_io: within one level of torch's bilinear resize at every size)")
_SPLIT3 = ("every state-dict key of a vggnet model has exactly three parts (scope.layer.param), "
           "so split('.', 2), split('.'), split('.', 3) and rsplit('.', 2) agree")
_NOT_TRAIN = "any split other than 'train' reads the test split, so the default's name is moot"
_FRACTION = ("CIFAR copies hold train/ and test/: the fraction and seed of a held-out split "
             "are never used")
_BEST = ("resolve_checkpoint falls back to best.safetensors for a name it does not find, so "
         "a misspelt default finds the same file")
_RAMP_END = ("at the ramp's end, and when start >= final, the linear size is already >= final "
             "and is capped at final: the early return only saves the arithmetic")
_NO_GPU = ("CUDA only: on a machine without a GPU, where the suite runs, the branch is never "
           "taken and the device is the CPU either way (the GPU tests cover it)")
_TORCH_LOAD = ("torch >= 2.6 (vggnet pins 2.14) loads with weights_only=True and keeps tensors "
               "on the CPU by default; the hostile-file tests pass either way")
_WORDING = "the wording of a message (the statement that builds it, apart from the raise)"
_PROGRESS = "tqdm's progress display: what it shows, not what is decoded"
_TARGETS = "torch.tensor of Python ints is int64 without asking"
_SQUARE = ("CIFAR images are square, and resizing 32 px to 32 px returns them unchanged: the "
           "height or the channel count in place of the width changes nothing")
_CLAMP = ("bilinear interpolation with antialiasing averages with non-negative weights: the "
          "result never leaves [0, 255], so neither bound of the clamp ever acts")
EQUIVALENT: dict[str, str] = {
    **{f"vggnet.training.state.xǁTrainStateǁload_state_dict__mutmut_{i}": _NO_GPU
       for i in range(23, 35)},
    **{f"vggnet.training.state.x_load_state__mutmut_{i}": _TORCH_LOAD for i in (3, 4, 6, 7)},
    **{f"vggnet.training.state.xǁTrainStateǁstate_dict__mutmut_{i}": _NO_GPU
       for i in range(32, 39)},
    "vggnet.inference.engine.xǁInferenceEngineǁ__init____mutmut_26": (
        "the engine's device is the model's: None leaves the input where it is, on the CPU "
        "where the suite runs (the GPU tests run the engine on cuda)"),
    **{f"vggnet.data.datasets.x__digits_arrays__mutmut_{i}": (
        "the fallback for a scikit-learn that no longer ships digits.csv.gz; the one vggnet "
        "installs ships it, so the branch is never taken") for i in (5, 40)},
    "vggnet.data.datasets.x__digits_arrays__mutmut_34": (
        "numpy infers the one negative dimension of a reshape, whatever its value"),
    "vggnet.data.datasets.x__digits_arrays__mutmut_37": (
        "float labels become int64 in the caller (torch.from_numpy(...).long())"),
    "vggnet.data.survey.x_survey_sizes__mutmut_1": (
        "the default sample of headers: 200 or 201 give the same median size"),
    "vggnet.data.survey.x_survey_sizes__mutmut_39": (
        "a tar member that is not a file but is named like an image (a folder x.png/) is the "
        "only one it lets through; any other non-image is unreadable and left out as before"),
    "vggnet.run.x_git_commit__mutmut_20": "how long to wait for git: any few seconds",
    "vggnet.training.schedule.x_lr_factor__mutmut_20": (
        "onecycle is continuous at its peak: both sides give 1.0 there"),
    "vggnet.inference.engine.x_fold_batchnorm__mutmut_33": (
        "a batch norm whose scale is 0 maps every value to its bias: the max commutes with it "
        "as with any non-decreasing map, so folding it is right too"),
    "vggnet.inference.engine.xǁInferenceEngineǁ_checked_call__mutmut_27": (
        "< instead of <= differs only for a difference exactly equal to the tolerance"),
    "vggnet.training.hooks.x_recipe_hooks__mutmut_9": "getattr's default None is as false as False",
    **{f"vggnet.models.weights.x__read_file__mutmut_{i}": _TORCH_LOAD for i in (9, 10, 12, 13)},
    **{f"vggnet.models.weights.x__read_file__mutmut_{i}": _WORDING for i in range(18, 24)},
    **{f"vggnet.data.datasets.x__decode_all__mutmut_{i}": _PROGRESS
       for i in (3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16)},
    **{f"vggnet.data.datasets.x__stack__mutmut_{i}": _TARGETS for i in (26, 28)},
    **{f"vggnet.data.datasets.x__cifar__mutmut_{i}": _TARGETS for i in (85, 87)},
    **{f"vggnet.data.datasets.x__cifar__mutmut_{i}": _FRACTION
       for i in (8, 9, 16, 17, 28, 29, 36)},
    **{f"vggnet.data.datasets.x__cifar__mutmut_{i}": _SQUARE for i in (91, 92)},
    **{f"vggnet.data.datasets.x__cifar__mutmut_{i}": _CLAMP for i in (95, 98)},
    "vggnet.data.datasets.x__cifar__mutmut_108": "align_corners=False is the default",
    "vggnet.run.x_resolve_checkpoint__mutmut_1": _BEST,
    "vggnet.run.x_resolve_checkpoint__mutmut_2": _BEST,
    "vggnet.run.x_read_run_metadata__mutmut_1": _BEST,
    "vggnet.run.x_read_run_metadata__mutmut_2": _BEST,
    **{f"vggnet.io.x_to_rgb__mutmut_{i}": ("numpy promotes the integer array to float in the "
                                          "division; fromarray of 2-D uint8 is mode L")
       for i in (12, 14, 28, 30)},
    **{f"vggnet.io.x_to_rgb__mutmut_{i}": ("the integer or float32 array is divided or "
                                          "clipped as a float either way: the same 8-bit "
                                          "values; fromarray of 2-D uint8 is mode L")
       for i in (48, 50, 55, 57)},
    **{f"vggnet.io.x_to_rgb__mutmut_{i}": (
        "a palette image: Pillow's convert without a mode, or with any mode name, gives RGB "
        "(RGBA with transparency), and RGBA with full alpha composites to the same RGB")
       for i in (73, 75, 81, 82)},
    **{f"vggnet.io.x_to_rgb__mutmut_{i}": "Pillow clamps a fill colour's 256 to 255"
       for i in (103, 104, 105, 106)},
    "vggnet.io.x_open_image__mutmut_20": (
        "ignoring every warning of Image.open instead of the bomb warning alone: no file "
        "decodes differently, and the bomb limit is vggnet's own check"),
    **{f"vggnet.io.x_open_image__mutmut_{i}": (
        "a JPEG's draft mode: Pillow's draft only sets the scale and keeps the file's own "
        "colour mode for any mode name, and to_rgb converts after")
       for i in (41, 45, 46)},
    **{f"vggnet.data.datasets.x__from_path__mutmut_{i}": (
        "the kind label of a cache key only sets apart keys whose other parts already differ "
        "(an archive's fingerprint, a folder's listing)") for i in (12, 15, 18, 19, 87, 91, 95, 96)},
    **{f"vggnet.data.datasets.x__from_path__mutmut_{i}": (
        "a folder's key holds the digest of every file's place, size and time: two folders "
        "that agree on all of it hold the same images, wherever they are") for i in (88, 92, 97)},
    **{f"vggnet.data.datasets.x__from_path__mutmut_{i}": _WORDING for i in (31, 67, 80, 85)},
    "vggnet.data.datasets.x__from_path__mutmut_42": (
        "with both val/ and test/, the second is decoded too but never used: the first "
        "present, as before, is the test split (slower, the same answer)"),
    "vggnet.data.datasets.x__from_path__mutmut_50": (
        "differs only for a class folder in train/ whose name ends like an image (cats.png/)"),
    **{f"vggnet.data.datasets.x__digits__mutmut_{i}": "align_corners=False is the default"
       for i in (12, 16)},
    **{f"vggnet.data.datasets.x__digits__mutmut_{i}": _CLAMP for i in (32, 33, 35, 39)},
    "vggnet.data.datasets.x__pick_splits__mutmut_11": _WORDING,
    "vggnet.data.datasets.x__pick_splits__mutmut_38": _WORDING,
    **{f"vggnet.data.datasets.x__decode_all__mutmut_{i}": (
        "the name only labels an unreadable image in the warning that skips it")
       for i in (20, 23)},
    **{f"vggnet.data.datasets.x_split_root__mutmut_{i}": (
        "the early exit: without it, a folder holding train/ reaches the same answer below "
        "unless train/ is its only folder and holds only a folder called train itself")
       for i in (4, 5)},
    "vggnet.run.x_open_run_data__mutmut_54": (
        "every run's config.json records its seed (resolve fills it): the default is never "
        "read, and any seed draws a valid stratified calibration subset"),
    **{f"vggnet.training.hooks.xǁFrozenFeaturesǁon_epoch_start__mutmut_{i}": (
        "the hook is only installed on a model whose freezing set frozen_backbone")
       for i in (7, 10)},
    **{f"vggnet.io.x_decode_image__mutmut_{i}": "a Pillow RGB image is uint8 already"
       for i in (17, 19)},
    **{f"vggnet.io.x_sha256_file__mutmut_{i}": ("the block size bounds memory only: any size "
                                               "gives the same digest")
       for i in (13, 15, 16)},
    **{f"vggnet.data.cache.x_cached_splits__mutmut_{i}": _TORCH_LOAD for i in (18, 20)},
    **{f"vggnet.data.cache.x_cached_splits__mutmut_{i}": ("the file is there when it is "
                                                        "removed: missing_ok never acts")
       for i in (37, 38)},
    "vggnet.data.cache.x__cache_problem__mutmut_2": _WORDING,
    "vggnet.data.cache.x__cache_problem__mutmut_6": _WORDING,
    "vggnet.io.x_resize_shorter_side__mutmut_10": _GAP,
    "vggnet.io.x_resize_shorter_side__mutmut_13": _GAP,
    "vggnet.io.x_resize_shorter_side__mutmut_26": _GAP,
    "vggnet.run.x_open_run_data__mutmut_1": _NOT_TRAIN,
    "vggnet.run.x_open_run_data__mutmut_2": _NOT_TRAIN,
    "vggnet.run.x_open_run_data__mutmut_3": ("the default seed only picks which stratified "
                                            "subset export calibrates on; any seed is valid"),
    "vggnet.run.x__streamed_images__mutmut_13": "train=None is falsy, as train=False",
    "vggnet.run.x__streamed_images__mutmut_29": (
        "candidates beyond 4n are only read when too many of the first 4n are unreadable: "
        "the first n readable images are the same"),
    "vggnet.run.x__streamed_images__mutmut_32": (
        "candidates beyond 4n are only read when too many of the first 4n are unreadable: "
        "the first n readable images are the same"),
    "vggnet.training.hooks.xǁWhiteningǁ__init____mutmut_16": "float('INF') == float('inf')",
    "vggnet.run.x_load_checkpoint__mutmut_1": _BEST,
    "vggnet.run.x_load_checkpoint__mutmut_2": _BEST,
    "vggnet.run.x_load_checkpoint__mutmut_16": (
        "without the pop, 'name' reaches create_model as its keyword argument: the same call"),
    "vggnet.run.x_load_checkpoint__mutmut_36": (
        "model.to(None) leaves the model where it is built, on the CPU: the same on a machine "
        "without a GPU, which is where the suite runs (the GPU tests load onto cuda)"),
    "vggnet.training.schedule.x_progressive_size__mutmut_11": _RAMP_END,
    "vggnet.training.schedule.x_progressive_size__mutmut_12": _RAMP_END,
    "vggnet.training.schedule.x_progressive_size__mutmut_13": _RAMP_END,
    "vggnet.serve.batcher.xǁDynamicBatcherǁ_gather__mutmut_10": (
        "with no time left (left == 0) waiting for 0 s times out at once: the batch closes "
        "either way"),
    "vggnet.serve.batcher.xǁDynamicBatcherǁ_gather__mutmut_12": (
        "return instead of break: the caller reads the list it passed in, not the return value"),
    "vggnet.serve.batcher.xǁDynamicBatcherǁ_gather__mutmut_18": (
        "return instead of break: the caller reads the list it passed in, not the return value"),
    "vggnet.models.weights.x_to_torchvision_state_dict__mutmut_13": _SPLIT3,
    "vggnet.models.weights.x_to_torchvision_state_dict__mutmut_14": _SPLIT3,
    "vggnet.models.weights.x_to_torchvision_state_dict__mutmut_16": _SPLIT3,
}

KILLED = {1, 3, 36, 24, -24, 152, 255, -11, -9}  # failed tests, timeouts, crashes
SURVIVED = {0}
NO_TESTS = {5, 33}


def main() -> int:
    import importlib.metadata as md

    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
                 ["only_mutate"])
    metas = sorted(m for m in (ROOT / "mutants" / "src").rglob("*.py.meta")
                   if m.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta") in listed)
    if not metas:
        print("no results: run `make mutation` first", file=sys.stderr)
        return 2
    modules, survivors = {}, []
    for meta in metas:
        module = meta.relative_to(ROOT / "mutants").as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        row = {"mutants": len(codes), "killed": 0, "survived": 0, "equivalent": 0,
               "no_tests": 0, "not_checked": 0}
        for name, code in sorted(codes.items()):
            if code is None:
                row["not_checked"] += 1
            elif code in KILLED:
                row["killed"] += 1
            elif name in EQUIVALENT:
                row["equivalent"] += 1
            elif code in SURVIVED or code in NO_TESTS:
                row["survived" if code in SURVIVED else "no_tests"] += 1
                survivors.append({"mutant": name, "module": module,
                                  "status": "survived" if code in SURVIVED else "no tests"})
            else:
                row["killed"] += 1  # suspicious exit codes: a test process that broke
        scored = row["mutants"] - row["equivalent"] - row["not_checked"]
        row["score"] = round(100 * row["killed"] / scored, 1) if scored else None
        modules[module] = row
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "tool": f"mutmut {md.version('mutmut')}", "python": platform.python_version(),
              "modules": modules, "survivors": survivors,
              "equivalent": {k: v for k, v in EQUIVALENT.items()}}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print("| module | mutants | checked | killed | equivalent | survived | score of those checked |")
    print("|---|---|---|---|---|---|---|")
    for module, r in modules.items():
        print(f"| `{module.removeprefix('src/vggnet/')}` | {r['mutants']} | "
              f"{r['mutants'] - r['not_checked']} | {r['killed']} | {r['equivalent']} | "
              f"{r['survived'] + r['no_tests']} | {r['score']}% |")
    print(f"\n{len(survivors)} survivors; wrote {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
