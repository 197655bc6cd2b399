"""Fixtures shared by the test modules.

Not autouse: the evaluation equality tests compare results across thread counts, so a module opts in with
``pytestmark = pytest.mark.usefixtures("one_thread")`` (or ``"one_thread_module"``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from ssdcli.data.prepare import prepare_voc
from ssdcli.data.samples import SAMPLE_CLASSES, write_sample_dataset


def _single_threaded() -> Iterator[None]:
    """One intra-op thread: on a shared, busy 2-core machine two threads make every small op many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    yield from _single_threaded()


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    yield from _single_threaded()


def _prepare_sample(root: Path, num_train: int, num_test: int, image_size: tuple[int, int], seed: int) -> Path:
    write_sample_dataset(root / "voc", num_train=num_train, num_test=num_test, image_size=image_size, seed=seed)
    prepare_voc(root / "voc", root / "prepared", classes=list(SAMPLE_CLASSES))
    return root / "prepared"


@pytest.fixture(scope="module")
def prepared_sample(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``prepared_sample(num_train, num_test, image_size=(H, W), seed=0)`` -> a prepared copy of the built-in
    sample data (VOC folder next to it, in ``.parent / "voc"``) in a fresh temporary folder."""

    def make(num_train: int, num_test: int, image_size: tuple[int, int] = (64, 80), seed: int = 0) -> Path:
        return _prepare_sample(tmp_path_factory.mktemp("sample"), num_train, num_test, image_size, seed)

    return make
