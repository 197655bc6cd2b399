"""Self-describing checkpoints: round trip, weights_only loading, bad files, atomic writes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

import ssdcli.checkpoint as checkpoint_mod
from ssdcli.checkpoint import load_checkpoint, load_model, read_weights_file, save_checkpoint
from ssdcli.errors import SsdError
from ssdcli.models import build_model
from ssdcli.models.ssd.priors import PRIOR_SPECS
from ssdcli.preprocess import CAFFE_BGR

CALLS: list[str] = []


pytestmark = pytest.mark.usefixtures("one_thread_module")


def _record(what: str) -> None:
    CALLS.append(what)


class Payload:
    """A pickled object that would run code (``_record``) if the file were loaded without weights_only."""

    def __reduce__(self):  # noqa: ANN204
        return (_record, ("code ran",))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("ssdlite320", 3, class_names=["cat", "dog"], preprocess=CAFFE_BGR).eval()


@pytest.fixture(scope="module")
def ckpt_path(model: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pth"
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 320, 320))[0].sum().backward()
    opt.step()
    opt.zero_grad()
    train_state = {"optimizer": opt.state_dict(), "iteration": 7, "rng": {"torch": torch.get_rng_state()}}
    save_checkpoint(path, model, train_state=train_state, meta={"source": "test", "map": 0.5})
    return path


def _states_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_round_trip(model: torch.nn.Module, ckpt_path: Path) -> None:
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.config.to_dict() == model.config.to_dict()
    assert ckpt.config.arch == "ssdlite320" and ckpt.config.num_classes == 3 and ckpt.config.image_size == 320
    assert ckpt.config.class_names == ["cat", "dog"]
    assert ckpt.config.preprocess == CAFFE_BGR
    assert ckpt.config.extra["prior_spec"] == PRIOR_SPECS["ssdlite320"].to_dict()
    assert _states_equal(ckpt.model_state, model.state_dict())
    assert ckpt.meta == {"source": "test", "map": 0.5}
    assert ckpt.train_state is not None and ckpt.train_state["iteration"] == 7
    assert torch.is_tensor(ckpt.train_state["rng"]["torch"])
    assert ckpt.train_state["optimizer"]["state"]  # momentum buffers survive

    loaded = load_model(ckpt_path)
    assert not loaded.training
    assert _states_equal(loaded.state_dict(), model.state_dict())
    assert torch.equal(loaded.priors, model.priors)
    x = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        for a, b in zip(loaded(x), model(x)):
            torch.testing.assert_close(a, b)


def test_loaded_with_weights_only(ckpt_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[object] = []
    real_load = torch.load

    def spy(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_checkpoint(ckpt_path)
    assert seen == [True]


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"format": "ssdcli-checkpoint", "model": {}, "extra": Payload()}, path)
    CALLS.clear()
    with pytest.raises(SsdError, match="refused") as info:
        load_checkpoint(path)
    assert CALLS == []  # nothing ran
    assert "\n" not in str(info.value) and str(path) in str(info.value)


# Text, JSON and git-LFS pointer files are recognised by their first bytes: "not a checkpoint", never "refused".
@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello world, not a checkpoint\n",
        b"abc",
        b'{"json": true}\n',
        b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n",
        b"PK\x03\x04" + bytes(64),
    ],
    ids=["empty", "text", "short-text", "json", "lfs-pointer", "zip-junk"],
)
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(SsdError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg and "refused" not in msg


def test_truncated_checkpoint(ckpt_path: Path, tmp_path: Path) -> None:
    data = ckpt_path.read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SsdError, match="truncated or corrupt"):
        load_checkpoint(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SsdError, match="file not found"):
        read_weights_file(tmp_path / "nope.pth")


def test_plain_state_dict_suggests_convert(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "plain.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(SsdError, match="ssd convert") as info:
        load_checkpoint(path)
    assert "not an ssdcli checkpoint" in str(info.value)


def test_other_dict_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"epoch": 3, "weights": [1, 2]}, path)
    with pytest.raises(SsdError, match="not an ssdcli checkpoint"):
        load_checkpoint(path)


def test_arch_mismatch(ckpt_path: Path) -> None:
    with pytest.raises(SsdError, match="'ssdlite320' model, expected 'ssd512'"):
        load_model(ckpt_path, arch="ssd512")
    assert load_model(ckpt_path, arch="ssdlite320").config.arch == "ssdlite320"


def test_weights_of_wrong_shape(model: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    payload = torch.load(io.BytesIO(_saved_bytes(model)), weights_only=True)
    key = next(k for k in payload["model"] if k.startswith("conf."))
    payload["model"][key] = torch.zeros(1)
    torch.save(payload, path)
    with pytest.raises(SsdError, match="weights do not fit the model"):
        load_model(path)


def _saved_bytes(model: torch.nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.save(
        {"format": "ssdcli-checkpoint", "version": 1, "config": model.config.to_dict(),
         "model": {k: v.detach().clone() for k, v in model.state_dict().items()}, "meta": {}},
        buf,
    )
    return buf.getvalue()


def test_failed_write_keeps_previous_file(
    model: torch.nn.Module, ckpt_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keep.pth"
    path.write_bytes(ckpt_path.read_bytes())
    before = path.read_bytes()
    real_atomic_write = checkpoint_mod.atomic_write

    def failing_atomic_write(target, write):  # noqa: ANN001, ANN202
        def half_then_fail(f) -> None:  # noqa: ANN001
            f.write(b"\0" * 4096)  # part of the payload reaches the temp file, then the disk fills up
            raise OSError(28, "No space left on device")

        return real_atomic_write(target, half_then_fail)

    monkeypatch.setattr(checkpoint_mod, "atomic_write", failing_atomic_write)
    with pytest.raises(SsdError, match="write failed"):
        save_checkpoint(path, model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pth"]  # no temp file left behind
    load_checkpoint(path)


def test_interrupted_write_keeps_previous_file(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keep.pth"
    path.write_bytes(b"previous")
    real_atomic_write = checkpoint_mod.atomic_write

    def interrupted(target, write):  # noqa: ANN001, ANN202
        def stop(f) -> None:  # noqa: ANN001
            f.write(b"partial")
            raise KeyboardInterrupt

        return real_atomic_write(target, stop)

    monkeypatch.setattr(checkpoint_mod, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model)
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pth"]
