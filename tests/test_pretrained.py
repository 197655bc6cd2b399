"""``-w coco-ssdlite320`` / ``coco-ssd300``: torchvision's weights API and cache, conversion, offline errors.

No network: the torchvision file is a random-weight SSDLite placed in a temporary ``TORCH_HOME`` cache, or
"downloaded" by a stand-in for ``torch.hub.download_url_to_file``.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
from cli_helpers import noise_images, ssd
from test_convert_ssdlite import random_ssdlite

from ssdcli.checkpoint import load_checkpoint
from ssdcli.convert import pretrained
from ssdcli.engine.recipes import resolve_for
from ssdcli.engine.train_options import TrainOptions
from ssdcli.errors import SsdError

LITE = pretrained.PRETRAINED["coco-ssdlite320"]


@pytest.fixture(scope="module")
def tv_lite_file(tmp_path_factory, one_thread_module) -> Path:
    path = tmp_path_factory.mktemp("tvfile") / LITE.file_name
    torch.save(random_ssdlite().state_dict(), path)
    return path


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert pretrained.cache_dir() == tmp_path / "torch" / "hub" / "checkpoints"
    return pretrained.cache_dir()


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_names_urls_and_published_maps() -> None:
    assert LITE.url == "https://download.pytorch.org/models/ssdlite320_mobilenet_v3_large_coco-a79551df.pth"
    assert LITE.coco_box_map == 21.3 and pretrained.PRETRAINED["coco-ssd300"].coco_box_map == 25.1
    assert pretrained.pretrained_arch("coco-ssd300") == "ssd300" and pretrained.pretrained_arch("best.pth") is None
    assert pretrained.resolve_weights("runs/train/exp/best.pth") == "runs/train/exp/best.pth"


def test_cached_file_is_converted_once(torch_home: Path, tv_lite_file: Path, monkeypatch, one_thread) -> None:
    torch_home.mkdir(parents=True)
    shutil.copy(tv_lite_file, torch_home / LITE.file_name)
    _no_network(monkeypatch)  # a file in the cache is used as-is (what torch.hub does)
    notes: list[str] = []
    native = pretrained.resolve_weights("coco-ssdlite320", notes.append)
    assert Path(native) == torch_home / "ssdlite320_mobilenet_v3_large_coco-a79551df.ssdcli.pth"
    ckpt = load_checkpoint(native)
    assert ckpt.config.arch == "ssdlite320" and ckpt.config.num_classes == 91
    assert ckpt.config.class_names[0] == "person" and ckpt.meta["converted_from"]["format"] == "torchvision"
    assert len(notes) == 1 and "converting" in notes[0]
    notes.clear()
    assert pretrained.resolve_weights("COCO-SSDLite320", notes.append) == native and notes == []  # cached


def test_download_goes_through_torch_hub_with_hash_check(torch_home: Path, tv_lite_file: Path, monkeypatch,
                                                         one_thread) -> None:  # fmt: skip
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, Path(dst).parent, hash_prefix))
        shutil.copy(tv_lite_file, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    notes: list[str] = []
    native = pretrained.resolve_weights("coco-ssdlite320", notes.append)
    assert calls == [(LITE.url, torch_home, "a79551df")]  # torch.hub checks the file's SHA-256 prefix
    assert (torch_home / LITE.file_name).is_file() and load_checkpoint(native).config.arch == "ssdlite320"
    assert "downloading" in notes[0] and "converting" in notes[1]


def test_offline_error_names_url_file_and_folder(torch_home: Path, monkeypatch) -> None:
    _no_network(monkeypatch)
    with pytest.raises(SsdError) as e:
        pretrained.resolve_weights("coco-ssd300")
    msg = str(e.value)
    assert "\n" not in msg and "-w coco-ssd300: cannot download https://download.pytorch.org/models/" in msg
    assert "Temporary failure in name resolution" in msg
    assert f"put it in {torch_home} as ssd300_vgg16_coco-b556d3b4.pth" in msg


def test_local_torchvision_file_is_converted_beside_it(tv_lite_file: Path, one_thread) -> None:
    native = pretrained.resolve_weights(str(tv_lite_file))
    assert Path(native) == tv_lite_file.with_name(tv_lite_file.stem + ".ssdcli.pth")
    assert load_checkpoint(native).config.extra["reduced_tail"] is True


def test_coco_weights_select_the_arch_and_its_finetune_recipe() -> None:
    resolved = resolve_for(TrainOptions(data="d", weights="coco-ssdlite320"))  # --arch left at its default
    assert resolved.start == "finetune" and resolved.recipe.name == "ssdlite-finetune"


def test_cli_detect_with_coco_weights(torch_home: Path, tv_lite_file: Path, tmp_path: Path, monkeypatch,
                                      one_thread) -> None:  # fmt: skip
    torch_home.mkdir(parents=True)
    shutil.copy(tv_lite_file, torch_home / LITE.file_name)
    imgs = noise_images(tmp_path / "imgs", 1)
    out = tmp_path / "det.json"
    res = ssd("detect", imgs[0], "-w", "coco-ssdlite320", "--json", out, "--conf", "0", "--max-det", "5",
              "--device", "cpu")  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "converting" in res.output
    records = json.loads(out.read_text())
    coco = set(load_checkpoint(pretrained.native_path(torch_home / LITE.file_name)).config.class_names)
    assert len(records) == 5 and all(r["label"] in coco for r in records)  # named by the COCO list
    _no_network(monkeypatch)
    (torch_home / LITE.file_name).unlink()
    res = ssd("detect", imgs[0], "-w", "coco-ssdlite320", "--device", "cpu")
    assert res.exit_code == 2 and "cannot download" in res.output and "Traceback" not in res.output


def test_fine_tune_init_from_coco_keeps_the_voc_rows(torch_home: Path, tv_lite_file: Path, one_thread) -> None:
    from ssdcli.data.voc import VOC_CLASSES
    from ssdcli.engine.model_init import init_model

    torch_home.mkdir(parents=True)
    shutil.copy(tv_lite_file, torch_home / LITE.file_name)
    notes: list[str] = []
    model, transfer = init_model("ssd300", list(VOC_CLASSES), None, "coco-ssdlite320", None, False, notes.append)
    assert model.config.arch == "ssdlite320" and model.config.extra["reduced_tail"] is True
    assert transfer is not None and transfer.kept == 20 and model.config.class_names == list(VOC_CLASSES)
    assert any("20 of 20 classes keep trained rows" in n for n in notes)
    assert any(n.startswith("initialised from coco-ssdlite320 (") for n in notes)
