"""`ssd train --devices` re-launches the same options under torchrun: the arguments are rebuilt from the parsed
options (not copied from sys.argv), so every spelling the user chose comes out as one canonical command."""

from __future__ import annotations

import pytest

import ssdcli.cli.train as train_cli
from tests.cli_helpers import ssd


@pytest.fixture
def launched(monkeypatch):
    calls: list[tuple[str, list[str]]] = []

    def fake_launch(devices: str, argv: list[str]) -> int:
        calls.append((devices, argv))
        return 0

    monkeypatch.setattr(train_cli, "launch_torchrun", fake_launch)
    return calls


def test_devices_forwards_given_options_canonically(launched, tmp_path):
    result = ssd("train", "--data", tmp_path, "--arch=ssd-mini", "-w", tmp_path / "w.pth", "--no-ema",
                 "--time-limit", "15m", "--lr=0.01", "--devices", "0,1", "--batch", "8")
    assert result.exit_code == 0, result.output
    (devices, argv), = launched
    assert devices == "0,1"
    assert argv[0] == "train" and "--devices" not in argv
    assert argv.count("--no-ema") == 1
    rest = [a for a in argv[1:] if a != "--no-ema"]
    pairs = dict(zip(rest[0::2], rest[1::2]))
    assert pairs == {"--data": str(tmp_path), "--arch": "ssd-mini", "--weights": str(tmp_path / "w.pth"),
                     "--time-limit": "15m", "--lr": "0.01", "--batch": "8"}


def test_devices_forwards_resume_and_nothing_unasked(launched, tmp_path):
    result = ssd("train", "--resume", tmp_path / "last.pth", "--devices=0,1")
    assert result.exit_code == 0, result.output
    (_, argv), = launched
    assert argv == ["train", "--resume", str(tmp_path / "last.pth")]
