"""No lost runs: the run folder guard, refused commands that change nothing, a full disk while
checkpointing, corrupt checkpoints, strict config values and dataset files that name themselves."""

from __future__ import annotations

import errno
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spade_core.cli import main as spade_main
from spade_core.data import build_dataset
from spade_core.data.transforms import PreprocessConfig
from spade_core.train import TrainConfig, builders
from spade_core.train import checkpoint as ckpt
from spade_core.train.config import OptionError
from spade_core.train.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
COCO = ROOT / "tests" / "data" / "coco_stuff_sample"


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_argv(out: Path, *extra: str, steps: int = 1) -> list[str]:
    """A tiny COCO-Stuff run (ngf 8, 32x32 crops, 2 images, no VGG) as command-line options."""
    return [
        "--data", str(COCO), "--format", "coco", "--out", str(out), "--max-steps", str(steps), "--batch-size", "2",
        "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--no-vgg", "--num-workers", "0", "--log-every", "1",
        "--sample-every", "0", "--checkpoint-every", "1", "--no-progress", "--set", "spade_hidden_nc=16",
        "--set", "n_layers_D=2", "--set", "dataset_options={max_dataset_size: 2}", "--set", "num_samples=2", *extra,
    ]


def train(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``spade train`` in-process: (exit code, stdout, stderr)."""
    code = spade_main(["train", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path, with its bytes."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spade: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A run of 2 steps with checkpoints at steps 1 and 2 (copied by the tests that change it)."""
    out = tmp_path_factory.mktemp("runs") / "base"
    argv = tiny_argv(out, steps=2)
    code = spade_main(["train", *argv])
    assert code == 0
    assert [p.name for p in ckpt.list_checkpoints(out)] == ["step_0000001", "step_0000002"]
    return out


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- the run folder guard


def test_refused_resume_with_a_changed_option_changes_nothing(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    before = snapshot(run)
    code, _, err = train(tiny_argv(run, "--resume", "--ngf", "4", steps=3), capsys)
    line = one_error_line(err)
    assert code == 2 and "--ngf 4 differs from the 8" in line and "resume without changing --ngf" in line
    assert snapshot(run) == before
    code, out, err = train(tiny_argv(run, "--resume", steps=3), capsys)  # a plain resume still works
    assert code == 0, err
    assert "from step_0000002 (step 2)" in out
    assert [r["step"] for r in read_metrics(run)] == [1, 2, 3]


def test_a_run_without_checkpoints_is_never_overwritten_silently(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"ngf": 8}))
    (run / "label_set.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 7, "old": true}\n')
    (run / "notes.txt").write_text("mine")
    before = snapshot(run)
    code, _, err = train(tiny_argv(run), capsys)
    line = one_error_line(err)
    assert code == 2 and "already holds a run (config.json, label_set.json, metrics.jsonl)" in line
    assert "--resume" in line and "--overwrite" in line and "--out" in line
    assert snapshot(run) == before

    code, _, err = train(tiny_argv(run, "--resume", "--overwrite"), capsys)
    assert code == 2 and "exclude each other" in one_error_line(err)
    assert snapshot(run) == before

    code, _, err = train(tiny_argv(run, "--overwrite"), capsys)
    assert code == 0, err
    assert [r["step"] for r in read_metrics(run)] == [1]  # the old record is gone
    assert json.loads((run / "config.json").read_text())["ngf"] == 8
    assert (run / "notes.txt").read_text() == "mine"  # not ours: kept
    assert not list(run.glob(".trash-*"))


def _bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"use_vae": "false"}))
    return path


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--ngf", "2000"], "--ngf must be an integer in 1..1024, got 2000"),
        (["--crop-size", "-32"], "--crop-size must be an integer in 1..4096, got -32"),
        (["--set", "lr=2e-4"], "--set lr must be a number in (0, 1], got the text '2e-4'"),
        (["--config", "BAD"], "c.json: use_vae must be true or false, got the text 'false'"),
        (["--resume-from", "9"], "--resume-from 9: no checkpoint"),
        (["--resume", "--set", "num_D=2", "--set", "dataset_options={max_dataset_size: 2, label_nc: 0}"],
         "--set dataset_options.label_nc must be an integer in 1..1024, got 0"),
        (["--resume", "--data", "/nonexistent/coco"], "/nonexistent/coco"),
    ],
)
def test_every_refused_command_changes_nothing(finished_run, tmp_path, capsys, extra, expected):
    run = copy_run(finished_run, tmp_path / "run")
    extra = [str(_bad_config(tmp_path)) if e == "BAD" else e for e in extra]
    before = snapshot(run)
    code, _, err = train(tiny_argv(run, *extra, steps=3), capsys)
    assert code == 2 and expected in one_error_line(err)
    assert snapshot(run) == before


def test_resumed_config_file_values_are_named_by_file_and_key(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**saved, "ngf": 2000}))
    before = snapshot(run)
    argv = tiny_argv(run, "--resume", steps=3)
    del argv[argv.index("--ngf"):argv.index("--ngf") + 2]
    code, _, err = train(argv, capsys)
    assert code == 2
    assert f"{run / 'config.json'}: ngf must be an integer in 1..1024, got 2000" in one_error_line(err)
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- checkpoints


def test_disk_full_while_checkpointing_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real = ckpt.save_file

    def fill_up(tensors, filename, *args, **kwargs):
        if ".tmp-step_0000002" in filename:
            real(tensors, filename, *args, **kwargs)  # a file is half there when the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_file", fill_up)
    code, _, err = train(tiny_argv(run, steps=3), capsys)
    line = one_error_line(err)
    assert code == 2
    assert line == (f"spade: error: no space left on device while writing checkpoint step 2 to {run}: "
                    "free space or pass another --out")
    assert ckpt.latest_checkpoint(run).name == "step_0000001"
    assert ckpt.verify_checkpoint(ckpt.latest_checkpoint(run)) is None
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000001"]
    assert not [p for p in run.rglob("*") if p.name.startswith(".tmp-")]

    monkeypatch.setattr(ckpt, "save_file", real)  # space freed: the run continues from step 1
    code, out, err = train(tiny_argv(run, "--resume", steps=3), capsys)
    assert code == 0, err
    assert "from step_0000001 (step 1)" in out and ckpt.latest_checkpoint(run).name == "step_0000003"


def test_disk_full_in_the_api_names_out_dir(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 2)
    net.to_json_string = lambda: "{}"
    ckpt.save_checkpoint(tmp_path, 1, {"generator": net}, {"x": torch.ones(1)}, {}, {}, {})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(ValueError, match=r"no space left on device while writing checkpoint step 2 .*another out_dir$"):
        ckpt.save_checkpoint(tmp_path, 2, {"generator": net}, {"x": torch.ones(1)}, {}, {}, {})
    assert ckpt.latest_checkpoint(tmp_path).name == "step_0000001"
    assert not list(ckpt.checkpoints_root(tmp_path).glob(".tmp-*"))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda c: _truncate(c / "generator" / ckpt.WEIGHTS_NAME), "generator/diffusion_pytorch_model.safetensors is truncated"),
        (lambda c: _truncate(c / ckpt.STATE_TENSORS), "training_state.safetensors is truncated"),
        (lambda c: (c / ckpt.STATE_JSON).write_text('{"step": 2, "epo'), "training_state.json is not valid JSON"),
        (lambda c: (c / "discriminator" / "config.json").unlink(), "discriminator/config.json is missing"),
    ],
)
def test_corrupt_latest_checkpoint_resumes_from_the_previous_one(finished_run, tmp_path, capsys, damage, problem):
    run = copy_run(finished_run, tmp_path / "run")
    damage(run / "checkpoints" / "step_0000002")
    code, out, err = train(tiny_argv(run, "--resume", steps=2), capsys)
    assert code == 0, err
    assert "spade: warning: checkpoint step_0000002" in err and problem in err
    assert "from step_0000001 (step 1)" in out
    assert ckpt.verify_checkpoint(run / "checkpoints" / "step_0000002") is None  # step 2 written again
    assert [r["step"] for r in read_metrics(run)] == [1, 2]


def test_resume_from_names_a_checkpoint(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    _truncate(run / "checkpoints" / "step_0000001" / ckpt.STATE_TENSORS)
    before = snapshot(run)
    code, _, err = train(tiny_argv(run, "--resume-from", "1", steps=2), capsys)
    line = one_error_line(err)
    assert code == 2 and "step_0000001 is unusable (training_state.safetensors is truncated" in line
    assert "--resume-from" in line and snapshot(run) == before
    code, _, err = train(tiny_argv(run, "--resume-from", "5", steps=2), capsys)
    assert code == 2 and "checkpoints are at steps 1, 2" in one_error_line(err)

    good = copy_run(finished_run, tmp_path / "good")
    code, out, err = train(tiny_argv(good, "--resume-from", "step_0000001", steps=2), capsys)
    assert code == 0, err
    assert "from step_0000001 (step 1)" in out and ckpt.latest_checkpoint(good).name == "step_0000002"


def test_no_complete_checkpoint_is_refused(finished_run, tmp_path, capsys):
    run = copy_run(finished_run, tmp_path / "run")
    for folder in ckpt.list_checkpoints(run):
        _truncate(folder / ckpt.STATE_TENSORS)
    before = snapshot(run)
    code, _, err = train(tiny_argv(run, "--resume", steps=3), capsys)
    lines = err.strip().splitlines()
    assert code == 2 and "holds no complete checkpoint (2 corrupt" in lines[-1] and "--overwrite" in lines[-1]
    assert snapshot(run) == before


# ----------------------------------------------------------------------------- config values


@pytest.mark.parametrize(
    "field, bad",
    [
        ("ngf", 0), ("ngf", 2000), ("ngf", "64"), ("ngf", 64.0), ("ngf", True), ("ndf", -1), ("z_dim", 0),
        ("crop_size", 0), ("crop_size", 100_000), ("load_size", -5), ("batch_size", 0), ("num_D", 0), ("num_D", 50),
        ("n_layers_D", 0), ("spade_hidden_nc", 0), ("max_steps", 0), ("niter", -1), ("seed", -1),
        ("aspect_ratio", 0.0), ("aspect_ratio", float("nan")), ("lr", 0.0), ("lr", float("inf")), ("lr", "0.1"),
        ("ema_decay", 1.0), ("lambda_vgg", -1.0), ("use_vae", "false"), ("no_vgg", 1), ("channels_last", "yes"),
        ("precision", "fp8"), ("format", "png"), ("num_upsampling_layers", "many"), ("init_type", "zeros"),
        ("dataset_options", [1]), ("out_dir", ""), ("keep_checkpoints", 0), ("num_workers", -1),
    ],
)
def test_every_option_is_checked_for_type_and_range(field, bad):
    with pytest.raises(OptionError) as err:
        TrainConfig(data_root="d").updated({field: bad}).validate()
    message = str(err.value)
    assert message.startswith(f"{field} must be ") and f"got {bad!r}" in message.replace("the text ", "")
    assert "\n" not in message


def test_good_values_pass_and_a_string_bool_is_not_truthy():
    TrainConfig(data_root="d", use_vae=False, ngf=1024, lr=1, aspect_ratio=2, load_size=None).validate()
    with pytest.raises(ValueError, match="use_vae must be true or false, got the text 'false'"):
        TrainConfig(data_root="d").updated({"use_vae": "false"}).validate()


def test_too_small_crop_names_the_least_size():
    with pytest.raises(OptionError, match="crop_size 16 is too small .* at least 32"):
        TrainConfig(data_root="d", crop_size=16).validate()
    with pytest.raises(OptionError, match="at least 128"):
        TrainConfig(data_root="d", crop_size=64, num_upsampling_layers="most").validate()


def test_config_file_load_names_the_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"ngf": 2000}))
    with pytest.raises(ValueError, match=f"^{path}: ngf must be an integer in 1..1024, got 2000$"):
        TrainConfig.load(path)


def test_memory_bound_is_checked_before_allocating(monkeypatch):
    from spade_core.labels import get_label_set

    cfg = TrainConfig(data_root="d", ngf=64, label_set="coco")
    counts = builders.parameter_counts(cfg, get_label_set("coco"))  # counted on the meta device
    assert 5 * 10**7 < counts["generator"] < 2 * 10**8 and 10**6 < counts["discriminator"] < 10**8
    need = builders.training_state_bytes(cfg, counts)
    assert need == 16 * sum(counts.values()) + 4 * counts["generator"]
    monkeypatch.setattr(builders, "memory_limit_bytes", lambda device: need - 1)
    with pytest.raises(OptionError) as err:
        builders.check_training_memory(cfg, get_label_set("coco"), torch.device("cpu"))
    message = str(err.value)
    assert message.startswith("ngf 64 makes a generator of ") and f"about {need / 1e9:,.1f} GB" in message
    assert "lower ngf" in message
    monkeypatch.setattr(builders, "memory_limit_bytes", lambda device: need)
    builders.check_training_memory(cfg, get_label_set("coco"), torch.device("cpu"))
    # ngf 1024: ~17.8 G parameters (hundreds of GB to train) refused without allocating them
    with pytest.raises(ValueError, match="ngf"):
        builders.check_training_memory(cfg.updated({"ngf": 1024}), get_label_set("coco"), torch.device("cpu"))


def test_memory_bound_in_cli_words(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(builders, "memory_limit_bytes", lambda device: 1_000_000)
    code, _, err = train(tiny_argv(tmp_path / "run"), capsys)
    line = one_error_line(err)
    assert code == 2 and line.startswith("spade: error: --ngf 8 makes a generator of ") and "lower --ngf" in line
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- dataset files


def _png_bomb(path: Path, width: int = 10_000, height: int = 10_000) -> Path:
    """A few-hundred-byte PNG whose header declares width x height grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _folder_dataset(root: Path, n: int = 3) -> Path:
    for i, stem in enumerate("abcdefgh"[:n]):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64, 3), 30 * i, np.uint8)).save(root / "images" / f"{stem}.jpg")
        Image.fromarray(np.full((64, 64), i % 3, np.uint8)).save(root / "labels" / f"{stem}.png")
    return root


@pytest.mark.parametrize(
    "target, kind",
    [("labels/b.png", "label map"), ("images/b.jpg", "image")],
)
def test_a_truncated_file_names_itself_and_its_kind(tmp_path, target, kind):
    root = _folder_dataset(tmp_path / "data")
    _truncate(root / target)
    ds = build_dataset("folder", root, label_nc=3, preprocess=PreprocessConfig("none"))
    assert ds[0]["label"].shape == (1, 64, 64)
    with pytest.raises(ValueError) as err:
        ds[1]
    message = str(err.value)
    assert message.startswith(f"cannot read {kind} {root / target} as an image") and "\n" not in message


def test_a_bomb_label_map_is_refused_before_decoding(tmp_path):
    root = _folder_dataset(tmp_path / "data")
    _png_bomb(root / "labels" / "a.png")
    ds = build_dataset("folder", root, label_nc=3, preprocess=PreprocessConfig("none"))
    with pytest.raises(ValueError, match=rf"^label map {root / 'labels' / 'a.png'} is 10000x10000 pixels, over the limit"):
        ds[0]


def test_label_errors_name_the_label_file(tmp_path):
    root = _folder_dataset(tmp_path / "data", n=1)
    Image.fromarray(np.full((64, 64), 9, np.uint8)).save(root / "labels" / "a.png")
    ds = build_dataset("folder", root, label_nc=3, preprocess=PreprocessConfig("none"))
    with pytest.raises(ValueError) as err:
        ds[0]
    assert str(err.value).startswith(f"label map {root / 'labels' / 'a.png'}: ") and "a.jpg" not in str(err.value)


def test_hf_cells_are_size_checked_before_decoding(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    image = Image.fromarray(np.zeros((32, 32, 3), np.uint8))
    label = Image.fromarray(np.ones((32, 32), np.uint8))
    datasets.Dataset.from_dict({"image": [image], "annotation": [label]}, features=features).save_to_disk(
        str(tmp_path / "hf")
    )
    monkeypatch.setenv("SPADE_MAX_IMAGE_PIXELS", "1000")
    ds = build_dataset("hf", tmp_path / "hf", preprocess=PreprocessConfig("none"))
    with pytest.raises(ValueError, match=r"^image \(.*hf:train\[0\] column 'image'\) is 32x32 pixels, over the limit"):
        ds[0]


def test_a_corrupt_file_met_in_training_is_one_line(tmp_path, capsys):
    """The bad file is read by a DataLoader worker process; its error still comes back as one line."""
    root = _folder_dataset(tmp_path / "data", n=3)
    _truncate(root / "labels" / "c.png")
    argv = [
        "--data", str(root), "--format", "folder", "--out", str(tmp_path / "run"), "--max-steps", "4",
        "--batch-size", "1", "--crop-size", "32", "--ngf", "8", "--ndf", "8", "--no-vgg", "--num-workers", "1",
        "--no-progress", "--checkpoint-every", "0", "--sample-every", "0", "--set", "spade_hidden_nc=16",
        "--set", "n_layers_D=2", "--set", "num_samples=1", "--set", "dataset_options={label_nc: 3}",
    ]
    code, _, err = train(argv, capsys)
    line = one_error_line(err)
    assert code == 2 and f"cannot read label map {root / 'labels' / 'c.png'} as an image" in line
