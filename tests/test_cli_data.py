"""`spade data synthetic`: a rendered dataset the folder format reads back."""

from __future__ import annotations

import json

from PIL import Image

from spade_core.cli import main
from spade_core.data import build_dataset


def test_spade_data_synthetic_writes_a_folder_dataset(tmp_path, capsys):
    out = tmp_path / "landscapes"
    assert main(["data", "synthetic", "--out", str(out), "--num", "3", "--size", "64", "--seed", "7"]) == 0
    stems = sorted(p.stem for p in (out / "labels").glob("*.png"))
    assert stems == sorted(p.stem for p in (out / "images").glob("*.png")) and len(stems) == 3
    assert Image.open(out / "labels" / f"{stems[0]}.png").mode == "L"
    assert len((out / "styles.jsonl").read_text().splitlines()) == 3
    assert json.loads((out / "styles.jsonl").read_text().splitlines()[0])
    dataset = build_dataset("folder", str(out), label_set="landscape")
    assert len(dataset) == 3 and int(dataset[0]["label"].max()) < 10
    assert main(["data", "synthetic", "--out", str(out), "--num", "3", "--size", "64"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
