"""VGG19 trunk (torchvision layout), its loading paths and errors, the VGG loss, and weight-file reading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spade_core.losses import VGGLoss
from spade_core.models.vgg import VGG19Features
from spade_core.weights import download_weights, load_state_dict_file

# torchvision vgg19 `features.*`: index of each 3x3 conv and its (out, in) channels.
_CONVS = [
    (0, 64, 3), (2, 64, 64),
    (5, 128, 64), (7, 128, 128),
    (10, 256, 128), (12, 256, 256), (14, 256, 256), (16, 256, 256),
    (19, 512, 256), (21, 512, 512), (23, 512, 512), (25, 512, 512),
    (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512),
]  # fmt: skip
TORCHVISION_FEATURE_KEYS = [
    item
    for index, out_c, in_c in _CONVS
    for item in ((f"features.{index}.weight", (out_c, in_c, 3, 3)), (f"features.{index}.bias", (out_c,)))
]


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(1, 3, 64, 64) * 2 - 1


@pytest.fixture(scope="module")
def safetensors_file(vgg: VGG19Features, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg19.safetensors"
    save_file(vgg.state_dict(), str(path))
    return path


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty spade cache and torch hub, offline, with no VGG override."""
    monkeypatch.setenv("SPADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SPADE_VGG19_WEIGHTS", raising=False)
    return tmp_path / "cache"


def test_state_dict_matches_torchvision_vgg19_features(vgg: VGG19Features) -> None:
    assert [(k, tuple(v.shape)) for k, v in vgg.state_dict().items()] == TORCHVISION_FEATURE_KEYS
    assert sum(p.numel() for p in vgg.parameters()) == 20_024_384
    assert not any(p.requires_grad for p in vgg.parameters())


def test_five_relu_outputs(vgg: VGG19Features, image: torch.Tensor) -> None:
    feats = vgg(image)
    assert [tuple(f.shape) for f in feats] == [
        (1, 64, 64, 64), (1, 128, 32, 32), (1, 256, 16, 16), (1, 512, 8, 8), (1, 512, 4, 4),
    ]  # fmt: skip
    assert all((f >= 0).all() for f in feats)  # post-ReLU
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        vgg(image[:, :1])


def test_imagenet_normalize_is_opt_in(vgg: VGG19Features, image: torch.Tensor) -> None:
    normalized = VGG19Features(imagenet_normalize=True)
    normalized.load_state_dict(vgg.state_dict())
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    manual = vgg(((image + 1) / 2 - mean) / std)
    for got, want in zip(normalized(image), manual):
        torch.testing.assert_close(got, want)
    assert set(normalized.state_dict()) == set(vgg.state_dict())


def test_safetensors_round_trip(vgg: VGG19Features, image: torch.Tensor, safetensors_file: Path) -> None:
    loaded = VGG19Features.from_pretrained(safetensors_file)
    for got, want in zip(loaded(image), vgg(image)):
        assert torch.equal(got, want)


def test_pth_with_classifier_and_wrapper(vgg: VGG19Features, image: torch.Tensor, tmp_path: Path) -> None:
    state = dict(vgg.state_dict(), **{"classifier.6.weight": torch.zeros(10, 4), "classifier.6.bias": torch.zeros(10)})
    torch.save(state, tmp_path / "vgg19.pth")
    torch.save({"state_dict": vgg.state_dict(), "epoch": torch.tensor(3)}, tmp_path / "wrapped.pt")
    for name in ("vgg19.pth", "wrapped.pt"):
        loaded = VGG19Features.from_pretrained(tmp_path / name)
        assert torch.equal(loaded(image)[-1], vgg(image)[-1])


def test_env_var_and_cache(
    vgg: VGG19Features, safetensors_file: Path, offline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPADE_VGG19_WEIGHTS", str(safetensors_file))
    assert torch.equal(VGG19Features.from_pretrained().features[0].weight, vgg.features[0].weight)
    monkeypatch.setenv("SPADE_VGG19_WEIGHTS", str(offline_env / "nope.pth"))
    with pytest.raises(FileNotFoundError, match="SPADE_VGG19_WEIGHTS=.*nope.pth does not exist"):
        VGG19Features.from_pretrained()
    monkeypatch.delenv("SPADE_VGG19_WEIGHTS")
    offline_env.mkdir(parents=True)
    cached = offline_env / "vgg19-dcbb9e9d.pth"
    cached.write_bytes(b"stand-in")
    assert download_weights("https://example.invalid/x", cached.name, "SPADE_VGG19_WEIGHTS") == cached


def test_missing_weights_offline(offline_env: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        VGG19Features.from_pretrained()
    message = str(info.value)
    assert "\n" not in message
    for part in ("vgg19-dcbb9e9d.pth", "SPADE_VGG19_WEIGHTS", "--no-vgg", str(offline_env)):
        assert part in message


def test_mismatched_state_dict_names_keys(vgg: VGG19Features, tmp_path: Path) -> None:
    state = dict(vgg.state_dict())
    state["features.3.weight"] = state.pop("features.2.weight")
    state["features.0.bias"] = torch.zeros(32)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ValueError) as info:
        VGG19Features.from_pretrained(tmp_path / "bad.pth")
    message = str(info.value)
    for part in ("missing features.2.weight", "unexpected features.3.weight", "features.0.bias has shape [32]"):
        assert part in message


def test_vgg_loss_zero_positive_and_gradients(vgg: VGG19Features, image: torch.Tensor) -> None:
    loss_fn = VGGLoss(vgg, lambda_vgg=10.0)
    assert loss_fn(image, image.clone()).item() == 0.0
    fake = (image.flip(-1) * 0.5).requires_grad_(True)
    loss = loss_fn(fake, image)
    assert loss.item() > 0
    torch.testing.assert_close(VGGLoss(vgg, lambda_vgg=1.0)(fake, image) * 10.0, loss)
    loss.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(p.grad is None for p in vgg.parameters())
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(fake, image[..., :32])


def test_load_state_dict_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_state_dict_file(tmp_path / "missing.safetensors")
    good = {"w": torch.arange(4.0)}
    save_file(good, str(tmp_path / "w.safetensors"))
    torch.save(good, tmp_path / "w.pth")
    assert torch.equal(load_state_dict_file(tmp_path / "w.safetensors")["w"], good["w"])
    for name in ("w.safetensors", "w.pth"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f"cut_{name}").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=rf"could not read weights from .*cut_{name} \(truncated.*re-download it"):
            load_state_dict_file(tmp_path / f"cut_{name}")
    (tmp_path / "w.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported weights file type '.ckpt'"):
        load_state_dict_file(tmp_path / "w.ckpt")
    torch.save({"w": torch.zeros(1), "opt": {"lr": 1.0}}, tmp_path / "nested.pth")
    with pytest.raises(ValueError, match="entry 'opt' is a dict"):
        load_state_dict_file(tmp_path / "nested.pth")


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    import argparse

    torch.save({"opt": argparse.Namespace(lr=1.0)}, tmp_path / "full.pth")
    with pytest.raises(ValueError, match="Python objects besides tensors"):
        load_state_dict_file(tmp_path / "full.pth")
