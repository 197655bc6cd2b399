"""Class-aware head transfer when fine-tuning to other classes: matching names, and which rows each family keeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from ssdcli.checkpoint import load_checkpoint, save_checkpoint
from ssdcli.convert.classes import coco_category_slots
from ssdcli.data.voc import VOC_CLASSES
from ssdcli.engine.class_transfer import match_classes, parse_class_map
from ssdcli.engine.model_init import init_model
from ssdcli.errors import SsdError
from ssdcli.models import build_model
from ssdcli.models.class_rows import remap_rows

COCO = coco_category_slots()  # 90 names, N/A-<id> in the unused slots: a 91-output torchvision-style head
NEW = [*VOC_CLASSES, "raccoon"]  # 20 VOC classes (all in COCO, 6 under other spellings) + one new class


def _coco_checkpoint(tmp_path: Path, arch: str, size: int) -> Path:
    torch.manual_seed(1)
    model = build_model(arch, len(COCO) + 1, class_names=COCO, image_size=size)
    with torch.no_grad():  # no two rows alike, BN statistics not at their defaults
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape).abs() + 0.1)
    return save_checkpoint(tmp_path / "coco.pth", model) or tmp_path / "coco.pth"


def test_match_by_name_alias_and_user_map() -> None:
    t = match_classes(COCO, NEW)
    by_new = {new: (old, how) for new, old, how in t.table}
    assert by_new["person"] == ("person", "name") and by_new["aeroplane"] == ("airplane", "alias")
    assert by_new["tvmonitor"] == ("tv", "alias") and by_new["diningtable"] == ("dining table", "alias")
    assert by_new["raccoon"] == (None, "fresh") and t.kept == 20
    assert t.rows[0] == 0 and t.rows[NEW.index("person") + 1] == COCO.index("person") + 1 and t.rows[-1] == -1
    # case-insensitive, reverse direction of the aliases (COCO dataset from a VOC checkpoint), user map wins
    t = match_classes(VOC_CLASSES, ["Airplane", "CAT", "bear", "couch"], {"bear": "dog"})
    assert t.rows == [0, 1, 8, 12, 18]
    assert [how for _, _, how in t.table] == ["alias", "name", "--class-map", "alias"]


def test_class_map_parsing_and_errors(tmp_path: Path) -> None:
    assert parse_class_map("raccoon = bear, kit=cat") == {"raccoon": "bear", "kit": "cat"}
    f = tmp_path / "map.txt"
    f.write_text("# dataset=checkpoint\nraccoon=bear\n\nkit=cat  # young cat\n")
    assert parse_class_map(str(f)) == {"raccoon": "bear", "kit": "cat"}
    with pytest.raises(SsdError, match="'raccoon' is not NEW=OLD"):
        parse_class_map("raccoon")
    with pytest.raises(SsdError, match="mapped twice"):
        parse_class_map("a=b,A=c")
    with pytest.raises(SsdError, match="'zebra' is not a class of the dataset"):
        match_classes(COCO, NEW, {"zebra": "horse"})
    with pytest.raises(SsdError, match="'wolf' is not a class of coco.pth"):
        match_classes(COCO, NEW, {"raccoon": "wolf"}, "coco.pth")


def test_remap_rows_is_group_major() -> None:
    src = torch.arange(2 * 3).float().reshape(6, 1)  # 2 anchors x 3 classes: rows a*3 + c
    own = torch.full((2 * 4, 1), -1.0)
    out = remap_rows(own, src, torch.tensor([0, 2, -1, 1]), groups=2)
    assert out.flatten().tolist() == [0, 2, -1, 1, 3, 5, -1, 4]


@pytest.mark.parametrize("arch,size", [("ssdlite320", 128), ("ssd-mini", 64)])
def test_coco_checkpoint_to_voc_keeps_exactly_the_matching_rows(tmp_path: Path, arch: str, size: int,
                                                                  one_thread) -> None:  # fmt: skip
    path = _coco_checkpoint(tmp_path, arch, size)
    src = load_checkpoint(path).model_state
    notes: list[str] = []
    torch.manual_seed(5)
    model, transfer = init_model(arch, NEW, None, str(path), None, False, notes.append)
    torch.manual_seed(5)
    fresh = build_model(arch, len(NEW) + 1, class_names=NEW, image_size=size).state_dict()
    assert transfer is not None and transfer.kept == 20
    assert any("20 of 21 classes keep trained rows, 1 start fresh" in n and re.search(r"aeroplane +<- airplane  \(alias\)", n)
               and re.search(r"raccoon +<- \(fresh\)", n) for n in notes)  # fmt: skip
    own = model.state_dict()
    anchors = model.prior_spec.priors_per_location()
    rows = transfer.rows
    checked = 0
    for i, a in enumerate(anchors):
        head = model.conf[i]
        last = [n for n, m in head.named_modules() if isinstance(m, torch.nn.Conv2d)][-1]
        for name in head.state_dict():
            key = f"conf.{i}.{name}"
            if name.rpartition(".")[0] != last:  # SSDLite's depthwise conv + BN: class-independent, copied
                assert torch.equal(own[key], src[key])
                continue
            mine = own[key].reshape(a, len(NEW) + 1, *own[key].shape[1:])
            theirs = src[key].reshape(a, len(COCO) + 1, *src[key].shape[1:])
            init = fresh[key].reshape(mine.shape)
            for j, r in enumerate(rows):
                if r >= 0:
                    assert torch.equal(mine[:, j], theirs[:, r]), (key, j)
                else:
                    assert torch.equal(mine[:, j], init[:, j]), (key, j)
            assert torch.equal(mine[:, 0], theirs[:, 0])  # background
            checked += 1
    assert checked == 2 * len(anchors)  # weight and bias of every conf head's output conv
    for key, value in own.items():  # everything outside the class heads (box regression included) is kept
        if not key.startswith("conf."):
            assert torch.equal(value, src[key]), key


def test_centernet_heatmap_channels_follow_the_classes(tmp_path: Path, one_thread) -> None:
    torch.manual_seed(0)
    old = ["cat", "dog", "person"]
    model = build_model("centernet-res18", 4, class_names=old, image_size=64)
    path = tmp_path / "cn.pth"
    save_checkpoint(path, model)
    src = load_checkpoint(path).model_state
    new_model, transfer = init_model("centernet-res18", ["Person", "bird", "cat"], None, str(path), None, False,
                                     lambda _: None)  # fmt: skip
    assert transfer is not None and transfer.rows == [0, 3, -1, 1]
    w = new_model.state_dict()["head_heatmap.2.weight"]
    assert torch.equal(w[0], src["head_heatmap.2.weight"][2]) and torch.equal(w[2], src["head_heatmap.2.weight"][0])
    assert not torch.equal(w[1], src["head_heatmap.2.weight"][1])
    assert torch.equal(new_model.state_dict()["head_heatmap.0.weight"], src["head_heatmap.0.weight"])
    assert float(new_model.state_dict()["head_heatmap.2.bias"][1]) == pytest.approx(-2.19)  # fresh: focal prior


def test_class_map_needs_weights_and_other_classes(tmp_path: Path) -> None:
    with pytest.raises(SsdError, match="--class-map: only used when fine-tuning"):
        init_model("ssd-mini", ["a"], 64, None, None, False, lambda _: None, "a=b")
    model = build_model("ssd-mini", 2, class_names=["a"], image_size=64)
    save_checkpoint(tmp_path / "m.pth", model)
    with pytest.raises(SsdError, match="already has the dataset's classes"):
        init_model("ssd-mini", ["a"], None, str(tmp_path / "m.pth"), None, False, lambda _: None, "a=a")


def test_train_records_the_mapping(prepared_sample, tmp_path: Path, one_thread) -> None:
    from ssdcli.engine.train_options import TrainOptions
    from ssdcli.engine.trainer import train

    data = prepared_sample(8, 2)
    classes = json.loads((data / "manifest.json").read_text())["classes"]
    src = build_model("ssd-mini", 3, class_names=[classes[0].upper(), "other"], image_size=64)
    save_checkpoint(tmp_path / "src.pth", src)
    opts = TrainOptions(data=str(data), arch="ssd-mini", iters=1, batch=4, workers=0, seed=0, lr=1e-3,
                        warmup_iters=0, project=str(tmp_path), name="t", weights=str(tmp_path / "src.pth"),
                        class_map=f"{classes[1]}=other", val_split="none")  # fmt: skip
    result = train(opts, report=lambda _m: None)
    recorded = json.loads((result.run_dir / "options.json").read_text())["class_transfer"]
    assert recorded["kept"] == 2 and recorded["classes"][1] == {"class": classes[1], "from": "other",
                                                                "how": "--class-map"}  # fmt: skip
    assert load_checkpoint(result.run_dir / "last.pth").meta["class_transfer"] == recorded


def test_freeze_backbone_holds_the_backbone_parameters(prepared_sample, tmp_path: Path, one_thread) -> None:
    from ssdcli.engine.train_options import TrainOptions
    from ssdcli.engine.trainer import train

    data = prepared_sample(8, 2)
    classes = json.loads((data / "manifest.json").read_text())["classes"]
    torch.manual_seed(0)
    src = build_model("ssd-mini", len(classes) + 1, class_names=list(classes), image_size=64)
    save_checkpoint(tmp_path / "src.pth", src)
    notes: list[str] = []
    opts = TrainOptions(data=str(data), arch="ssd-mini", iters=2, batch=4, workers=0, seed=0, lr=1e-2,
                        warmup_iters=0, project=str(tmp_path), name="f", weights=str(tmp_path / "src.pth"),
                        val_split="none", freeze_backbone=1.0, ema=False)  # fmt: skip
    result = train(opts, report=notes.append)
    assert any("not updated during the first 1 of the run" in n for n in notes)
    after = load_checkpoint(result.run_dir / "last.pth").model_state
    params = dict(src.named_parameters())
    backbone = [k for k in params if k.startswith("backbone.")]
    assert backbone and all(torch.equal(after[k], params[k].detach()) for k in backbone)
    assert any(not torch.equal(after[k], params[k].detach()) for k in params if k.startswith(("loc.", "conf.")))
    assert json.loads((result.run_dir / "options.json").read_text())["freeze_backbone"] == 1.0
