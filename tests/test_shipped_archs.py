"""The arch files the project ships with its studies' results (studies/results/**/arch*.json) are ones a
user can retrain: each builds, its recorded MACs are the built net's, and its teacher is named as a
RobustBench-style checkpoint name, not a path of the machine that ran the study."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import rnas
from rnas.engine.cost import count_macs

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "studies" / "results").rglob("arch*.json"))


def test_there_are_shipped_arch_files():
    assert len(SHIPPED) >= 7


@pytest.mark.parametrize("path", SHIPPED, ids=[p.relative_to(ROOT).as_posix() for p in SHIPPED])
def test_a_shipped_arch_file_builds_and_names_its_teacher(path):
    arch = json.loads(path.read_text())
    model = rnas.build_model(path)
    assert count_macs(model, arch["input_size"], "cpu") == arch["macs"]
    checkpoint = arch["teacher"]["checkpoint"]
    assert "/" not in checkpoint and not checkpoint.endswith(".pt"), checkpoint
    assert len(arch["tutors"]) == len(arch["student_layers"])
