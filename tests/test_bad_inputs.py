"""The bad-input catalogue: every input a user can get wrong, what the program does with it, and what it says.

One table, :data:`CASES`. Each case is an input (a command line, with the files it names made first), the class of
outcome it must have, and a fragment of what the program must say:

- ``refused``: exit status 2 and one line ``lightning-ebm <command>: error: <message>``, before any work: the case's
  folder holds exactly what it held before (nothing written, nothing lost);
- ``warned``: the command does its work (exit status 0) and says the fragment once;
- ``supported``: an unusual input that works as documented (exit status 0), the fragment in what it prints;
- ``stopped``: a run that cannot go on (diverging chains, no memory) ends with exit status 1 and one line that says
  why and what to change, and the checkpoints it had are intact.

No case may print a traceback or hang: each has a timeout. Commands run as the user runs them, the console script in
a process of its own (see :mod:`tests.forked_cli`), in a folder of their own with a user's environment. A few inputs
exist only in Python (a model built in a notebook); their cases call the API.
"""

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_ebm.checkpoint_io import TEMP_MARK
from tests.conftest import TINY
from tests.forked_cli import ForkedCLI

FIT = ["fit", "--config", "texture", "--config", "debug", "--trainer.max_steps=2", *TINY]
FACES = ["fit", "--config", "abp_faces", "--config", "debug", "--data", "ImageFolderDataModule"]
FACES += ["--data.image_size=32", "--data.num_workers=0", "--model.generator_steps=1", "--data.val_fraction=0.25"]
SOUND = ["fit", "--config", "abp_sound", "--config", "debug"]
RUN = "runs/texture/trained"
CKPT = f"{RUN}/checkpoints/last.ckpt"


@dataclass
class Case:
    """One bad input: ``args`` run in a fresh folder after ``setup(folder, assets)`` made its files."""

    id: str
    args: list[str]
    expect: str  # refused | warned | supported | stopped
    says: str
    setup: Callable[[Path, dict], None] | None = None
    check: Callable[[Path], None] | None = None  # more assertions on the folder afterwards
    python: Callable[[Path, dict], object] | None = None  # an input of the Python API: called instead of the CLI
    skip: str = ""


# ------------------------------------------------------------------------------------------- the files cases name
def write(name: str, text: str) -> Callable[[Path, dict], None]:
    """A text file ``folder/name``."""

    def make(folder: Path, assets: dict) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    return make


def images(name: str, n: int, size: int = 40, bad: int = 0) -> Callable[[Path, dict], None]:
    """``n`` random RGB PNGs in ``folder/name`` and ``bad`` files named .png that hold a line of text."""

    def make(folder: Path, assets: dict) -> None:
        (folder / name).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name / f"g{i}.png")
        for i in range(bad):
            (folder / name / f"f{i}.png").write_text("x\n")

    return make


def truncated_jpeg(folder: Path, assets: dict) -> None:
    rng = np.random.default_rng(0)
    (folder / "tex").mkdir()
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / "whole.jpg", quality=95)
    (folder / "tex" / "bad.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:3000])
    (folder / "whole.jpg").unlink()


def nan_tiff(folder: Path, assets: dict) -> None:
    array = np.random.default_rng(0).random((32, 32), dtype=np.float32)
    array[3, 5] = np.nan
    Image.fromarray(array, mode="F").save(folder / "t.tif")


def dot(folder: Path, assets: dict) -> None:
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "dot.png")


def trained(folder: Path, assets: dict) -> None:
    """The run of a texture fit (4 steps, checkpoints at steps 2 and 4) in ``runs/texture/trained``."""
    shutil.copytree(assets["run"], folder / RUN)


def trained_then(change: Callable[[Path], None]) -> Callable[[Path, dict], None]:
    def make(folder: Path, assets: dict) -> None:
        trained(folder, assets)
        change(folder / RUN / "checkpoints")

    return make


def corrupt_last(checkpoints: Path) -> None:
    last = checkpoints / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])


def corrupt_all(checkpoints: Path) -> None:
    for ckpt in checkpoints.glob("*.ckpt"):
        ckpt.write_bytes(ckpt.read_bytes()[:1000])


def partial_save(checkpoints: Path) -> None:
    (checkpoints / f".last.ckpt{TEMP_MARK}12345").write_bytes(b"PK partial")


def coopnets(folder: Path, assets: dict) -> None:
    (folder / "other" / "checkpoints").mkdir(parents=True)
    shutil.copy(assets["coopnets"], folder / "other" / "checkpoints" / "last.ckpt")


def plain_torch(folder: Path, assets: dict) -> None:
    torch.save({"weight": torch.zeros(2)}, folder / "weights.ckpt")


def not_torch_zip(folder: Path, assets: dict) -> None:
    import zipfile

    with zipfile.ZipFile(folder / "archive.ckpt", "w") as archive:
        archive.writestr("readme.txt", "not a checkpoint")


# --------------------------------------------------------------------------------------- checks after a case
def gone(relative: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert not list(folder.glob(relative)), relative

    return check


def kept(relative: str) -> Callable[[Path], None]:
    def check(folder: Path) -> None:
        assert list(folder.glob(relative)), relative

    return check


def python_shape(folder: Path, assets: dict) -> None:
    from lightning_ebm.methods import GenerativeConvNet

    GenerativeConvNet(sample_shape=(32, 32))


def python_other_method(folder: Path, assets: dict) -> None:
    from lightning_ebm.methods import GenerativeConvNet

    GenerativeConvNet.load_from_checkpoint(assets["coopnets"])


def python_zero_step(folder: Path, assets: dict) -> None:
    from tests.methods.test_coopnets import make_model

    make_model(generator_step_size=0)


GPU = torch.cuda.is_available() or torch.backends.mps.is_available()
OVERCOMMIT = Path("/proc/sys/vm/overcommit_memory")
ALWAYS_OVERCOMMITS = OVERCOMMIT.is_file() and OVERCOMMIT.read_text().strip() == "1"

CASES = [
    # ------------------------------------------------------------------------------------ the command line
    Case("unknown-command", ["train", "--config", "texture"], "refused", "unknown command 'train'; the commands are"),
    Case("unknown-recipe", ["fit", "--config", "textur"], "refused", "--config textur: no such file, and no shipped"),
    Case("unknown-flag", [*FIT, "--trainer.max_stepz=3"], "refused", "did you mean --trainer.max_steps?"),
    Case(
        "unknown-model-option",
        [*FIT, "--model.langevin_stepsize=0.1"],
        "refused",
        "GenerativeConvNet takes no option 'langevin_stepsize'; did you mean langevin_step_size?",
    ),
    Case("not-an-int", [*FIT, "--trainer.max_steps=abc"], "refused", "--trainer.max_steps=abc: expected int"),
    Case("a-float-for-an-int", [*FIT, "--model.langevin_steps=1.5"], "refused", "--model.langevin_steps=1.5: expe"),
    Case("not-a-seed", [*FIT, "--seed_everything=abc"], "refused", "--seed_everything=abc: expected bool or int"),
    Case("no-such-precision", [*FIT, "--trainer.precision=64bit"], "refused", "=64bit: expected one of 64, 32, 16"),
    Case("no-such-method", [*FIT, "--model", "GenerativeConvNt"], "refused", "did you mean GenerativeConvNet?"),
    Case("no-such-datamodule", [*FIT, "--data", "TextureDataModul"], "refused", "did you mean TextureDataModule?"),
    Case("no-such-callback", [*FIT, "--trainer.callbacks+=SampleGrd"], "refused", "did you mean SampleGrid?"),
    Case(
        "evaluate-without-checkpoint", ["validate", "--config", "texture"], "refused", "validate needs a trained model"
    ),
    Case("test-without-checkpoint", ["test", "--config", "texture"], "refused", "give --ckpt_path <run>/checkpoin"),
    Case("predict-without-checkpoint", ["predict", "--config", "texture"], "refused", "or --ckpt_path none for an"),
    Case("print-config-needs-no-checkpoint", ["validate", "--config", "texture", "--print_config"], "supported", "ckp"),
    Case("submit-without-recipe", ["submit", "--slurm.partition=gpu"], "refused", "submit needs the recipe of the run"),
    Case("visualize-no-samples", ["visualize", "--ckpt_path", "x.ckpt", "--n", "0"], "refused", "--n 0: the number"),
    Case("visualize-negative-steps", ["visualize", "--ckpt_path", "x.ckpt", "--steps", "-1"], "refused", "cannot be"),
    Case(
        "visualize-no-leapfrog", ["visualize", "--ckpt_path", "x", "--leapfrog_steps", "0"], "refused", "at least 1 le"
    ),
    Case("visualize-zero-temperature", ["visualize", "--ckpt_path", "x", "--temperature", "0"], "refused", "T > 0"),
    # ------------------------------------------------------------------------------------------ config files
    Case(
        "yaml-syntax-error",
        ["fit", "--config", "bad.yaml"],
        "refused",
        "--config bad.yaml:4:4: not valid YAML (expected ',' or ']', but got ':')",
        setup=write("bad.yaml", "model:\n  init_args:\n    a: [1, 2\n  b: 3\n"),
    ),
    Case(
        "config-a-list", ["fit", "--config", "l.yaml"], "refused", "holds a list, not a", setup=write("l.yaml", "- a")
    ),
    Case("config-empty", ["fit", "--config", "e.yaml"], "refused", "e.yaml: holds nothing", setup=write("e.yaml", "")),
    Case(
        "config-unknown-section",
        ["fit", "--config", "texture", "--config", "k.yaml"],
        "refused",
        "does not accept option 'bogus'",
        setup=write("k.yaml", "bogus: 1\n"),
    ),
    Case(
        "config-interpolation-to-nothing",
        ["fit", "--config", "texture", "--config", "i.yaml"],
        "refused",
        "--model.langevin_steps: Interpolation key '.nope' not found",
        setup=write("i.yaml", "model:\n  init_args:\n    langevin_steps: ${.nope}\n"),
    ),
    # -------------------------------------------------------------------------------------- model and trainer
    Case("zero-step-size", [*FIT, "--model.langevin_step_size=0"], "refused", "langevin_step_size=0.0: Langevin needs"),
    Case("negative-steps", [*FIT, "--model.langevin_steps=-1"], "refused", "Langevin needs langevin_steps >= 0"),
    Case("no-chains", [*FIT, "--model.n_chains=0"], "refused", "needs n_chains >= 1, got 0"),
    Case("negative-learning-rate", [*FIT, "--model.optimizer.lr=-1"], "refused", "optimizer: Invalid learning rate"),
    Case("validate-every-0-steps", [*FIT, "--trainer.val_check_interval=0"], "refused", "must be above 0"),
    Case("negative-epochs", [*FIT, "--trainer.max_epochs=-5"], "refused", "`max_epochs` must be a non-negative"),
    Case("no-devices", [*FIT, "--trainer.devices=0"], "refused", "the trainer settings: `Trainer(devices='0')`"),
    Case(
        "gpu-on-a-machine-without",
        [*FIT, "--trainer.accelerator=gpu"],
        "refused",
        "torch here sees no GPU: give --trainer.accelerator=cpu",
        skip="this machine has a GPU" if GPU else "",
    ),
    Case(
        "run-folder-under-a-file",
        [*FIT, "--trainer.default_root_dir=notes.txt"],
        "refused",
        "--trainer.default_root_dir notes.txt: cannot make the run directory notes.txt/texture (Not a directory)",
        setup=write("notes.txt", "my notes\n"),
    ),
    Case("no-steps", [*FIT, "--trainer.max_steps=0"], "supported", "done in"),
    Case("debug-validates-one-batch", [*FIT, "--trainer.max_steps=4"], "supported", "limit_val_batches=1)` was"),
    Case("python-sample-shape-without-channels", [], "refused", "must be (C, H, W) for images", python=python_shape),
    Case("python-zero-latent-step", [], "refused", "generator_step_size=0: latent Langevin", python=python_zero_step),
    # ------------------------------------------------------------------------------------------------- data
    Case("texture-missing", [*FIT, "--data.textures=nope.png"], "refused", "no texture image or folder at nope.png"),
    Case(
        "texture-folder-without-images",
        [*FIT, "--data.textures=notes"],
        "refused",
        "the folder notes holds no image files",
        setup=write("notes/a.txt", "x"),
    ),
    Case(
        "texture-truncated",
        [*FIT, "--data.textures=tex"],
        "refused",
        "cannot read tex/bad.jpg as an image",
        setup=truncated_jpeg,
    ),
    Case("texture-nan-pixel", [*FIT, "--data.textures=t.tif"], "refused", "t.tif has 1 non-finite", setup=nan_tiff),
    Case("texture-1x1", [*FIT, "--data.textures=dot.png"], "warned", "dot.png is 1 pixels wide and 1 high", setup=dot),
    Case("zero-image-size", [*FIT, "--data.image_size=0"], "refused", "TextureDataModule needs image_size >= 1, got 0"),
    Case("crop-larger-than-image", [*FIT, "--data.crop_size=500"], "refused", "crop_size 500 is larger than the ima"),
    Case("no-batch", [*FIT, "--data.batch_size=0"], "refused", "needs batch_size >= 1, got 0"),
    Case("folder-missing", [*FACES, "--data.root=nope"], "refused", "no image folder at nope"),
    Case(
        "folder-without-images",
        [*FACES, "--data.root=notes"],
        "refused",
        "no image files under notes",
        setup=write("notes/a.txt", "x"),
    ),
    Case(
        "folder-all-unreadable",
        [*FACES, "--data.root=faces", "--data.batch_size=4"],
        "refused",
        "none of the 4 image files under faces could be read",
        setup=images("faces", 0, bad=4),
    ),
    Case(
        "folder-one-unreadable",
        [*FACES, "--data.root=faces", "--data.batch_size=2", "--trainer.callbacks=[]"],
        "warned",
        "skipped 1 unreadable image file(s) so far; the latest: cannot read faces/f0.png",
        setup=images("faces", 8, bad=1),
    ),
    Case(
        "sound-not-a-sound",
        [*SOUND, "--data.root=sounds"],
        "refused",
        "cannot read the sound file sounds/a.wav",
        setup=write("sounds/a.wav", "x"),
    ),
    Case("sound-folder-empty", [*SOUND, "--data.root=."], "refused", "no .wav/.flac/.ogg files under ."),
    # ------------------------------------------------------------------------------------------ checkpoints
    Case("checkpoint-missing", ["validate", "--ckpt_path", "nope.ckpt"], "refused", "--ckpt_path nope.ckpt: no such"),
    Case("checkpoint-a-folder", ["validate", "--ckpt_path", "."], "refused", "--ckpt_path .: no such file"),
    Case(
        "checkpoint-truncated",
        ["validate", "--ckpt_path", CKPT],
        "refused",
        "last.ckpt: not a whole checkpoint",
        setup=trained_then(corrupt_last),
    ),
    Case(
        "checkpoint-a-text-file",
        ["fit", "--config", "texture", "--ckpt_path", "notes.txt"],
        "refused",
        "--ckpt_path notes.txt: not a whole checkpoint",
        setup=write("notes.txt", "x"),
    ),
    Case(
        "checkpoint-plain-weights",
        ["validate", "--ckpt_path", "weights.ckpt"],
        "refused",
        "weights.ckpt: a torch file but not a Lightning checkpoint",
        setup=plain_torch,
    ),
    Case(
        "checkpoint-a-zip-of-something-else",
        ["predict", "--ckpt_path", "archive.ckpt"],
        "refused",
        "--ckpt_path archive.ckpt: not a readable checkpoint",
        setup=not_torch_zip,
    ),
    Case(
        "checkpoint-of-another-method",
        ["validate", "--config", "texture", "--config", "debug", "--ckpt_path", "other/checkpoints/last.ckpt"],
        "refused",
        "holds a CoopNets model; the config asks for GenerativeConvNet: drop --config/--model",
        setup=coopnets,
    ),
    Case(
        "another-method-asked-for",
        ["validate", "--ckpt_path", CKPT, "--model", "CoopNets"],
        "refused",
        "holds a GenerativeConvNet model; the config asks for CoopNets",
        setup=trained,
    ),
    Case("python-another-method", [], "refused", "holds a CoopNets model, not a Gen", python=python_other_method),
    Case("evaluate-the-checkpoint-alone", ["validate", "--ckpt_path", CKPT], "supported", "step 4", setup=trained),
    Case(
        "predict-no-samples",
        ["predict", "--ckpt_path", CKPT, "--data.n_predict=0"],
        "refused",
        "needs n_predict >= 1, got 0",
        setup=trained,
    ),
    Case(
        "visualize-no-such-node",
        ["visualize", "--ckpt_path", CKPT, "--node", "x"],
        "refused",
        "unknown node 'x'; the nodes of GenerativeConvNet are: score",
        setup=trained,
    ),
    Case(
        "visualize-plain-weights",
        ["visualize", "--ckpt_path", "weights.ckpt"],
        "refused",
        "not a Lightning checkpoint",
        setup=plain_torch,
    ),
    Case("resume-before-any-run", [*FIT, "--ckpt_path", "last"], "warned", "--ckpt_path last: no runs/texture/*/che"),
    Case(
        "resume-from-a-truncated-last",
        [*FIT, "--ckpt_path", "last", "--trainer.max_steps=6"],
        "warned",
        "last.ckpt cannot be read (truncated or corrupt); trying an older checkpoint",
        setup=trained_then(corrupt_last),
        check=kept(f"{RUN}/checkpoints/*step=6.ckpt"),
    ),
    Case(
        "resume-with-nothing-readable",
        [*FIT, "--ckpt_path", "last", "--trainer.max_steps=6"],
        "refused",
        "can be read (all truncated or corrupt); start a new run",
        setup=trained_then(corrupt_all),
    ),
    Case(
        "resume-after-a-kill-inside-a-save",
        [*FIT, "--ckpt_path", "last", "--trainer.max_steps=6"],
        "supported",
        "step 6",
        setup=trained_then(partial_save),
        check=gone(f"{RUN}/checkpoints/.*{TEMP_MARK}*"),
    ),
    # ---------------------------------------------------------------------------------------------- runtime
    Case(
        "diverging-chains",
        [*FIT, "--model.langevin_step_size=1e6"],
        "stopped",
        "became NaN or infinite at training step 0. Training stopped before saving",
    ),
    Case(
        "out-of-memory",
        [*FIT, "--model.n_chains=1000000000000"],
        "stopped",
        "out of memory (",
        skip="this kernel always overcommits: the allocation would succeed, then the OOM killer strike"
        if ALWAYS_OVERCOMMITS
        else "",
    ),
]


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file under ``folder`` with its size and modification time, and every folder."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    runner = ForkedCLI(tmp_path_factory.mktemp("cli-output"))
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def assets(cli, tmp_path_factory):
    """A texture run of 4 steps (checkpoints at steps 2 and 4) and a CoopNets checkpoint."""
    from tests.methods.test_coopnets import data, make_model, trainer

    folder = tmp_path_factory.mktemp("assets")
    out = cli.run([*FIT, "--trainer.max_steps=4", "--trainer.default_root_dir=runs"], cwd=folder)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (folder / "runs" / "texture").iterdir()
    fitted = trainer(folder, 1)
    fitted.fit(make_model(), data())
    fitted.save_checkpoint(folder / "coop.ckpt")
    return {"run": run, "coopnets": folder / "coop.ckpt"}


def test_the_catalogue_has_at_least_40_cases_each_named_once():
    ids = [case.id for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)
    assert {case.expect for case in CASES} == {"refused", "warned", "supported", "stopped"}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, cli, assets, tmp_path):
    if case.skip:
        pytest.skip(case.skip)
    folder = tmp_path / "work"
    folder.mkdir()
    if case.setup is not None:
        case.setup(folder, assets)
    before = snapshot(folder)
    if case.python is not None:
        with pytest.raises(ValueError) as refused:
            case.python(folder, assets)
        assert case.says in str(refused.value)
        return
    out = cli.run(case.args, cwd=folder)
    output = out.stdout + out.stderr
    assert out.returncode != "timeout", f"hung: {output[-3000:]}"
    assert "Traceback" not in output, output[-3000:]
    command = case.args[0]
    if case.expect == "refused":
        assert out.returncode == 2, output[-3000:]
        errors = [line for line in out.stderr.splitlines() if line.startswith(f"lightning-ebm {command}: error: ")]
        assert len(errors) == 1 and out.stderr.rstrip().endswith(errors[0]), out.stderr[-3000:]
        assert case.says in errors[0], errors[0]
        assert snapshot(folder) == before  # refused before any work: nothing written, nothing lost
    elif case.expect == "stopped":
        assert out.returncode == 1, output[-3000:]
        last = out.stderr.rstrip().splitlines()[-1]
        assert last.startswith(f"lightning-ebm {command}: ") and case.says in last, out.stderr[-3000:]
    else:
        assert out.returncode == 0, output[-3000:]
        assert case.says in output, output[-3000:]
        if case.expect == "warned":  # once, not once per step
            assert output.count(case.says) == 1, output[-3000:]
    if case.check is not None:
        case.check(folder)
