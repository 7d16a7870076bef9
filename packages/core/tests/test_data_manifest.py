from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vlp_core.data import (
    BadInputError,
    InvalidValueError,
    ManifestError,
    MissingColumnError,
    UnsupportedFormatError,
    read_manifest,
)


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": ["a.png", "b.png", "c.png"],
            "text": ["cardiomegaly", "normal", "effusion"],
            "label": [1, 0, 1],
            "patient_id": ["00017", "00017", "00420"],
            "age": [81.0, 81.0, 40.5],
        }
    )


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "y.csv"
    _frame()[["path", "label"]].to_csv(path, index=False)
    with pytest.raises(MissingColumnError) as info:
        read_manifest(path, ["path", "text"])
    assert str(info.value) == f"manifest {path}: missing required column 'text' (found: path, label)"
    assert isinstance(info.value, BadInputError) and isinstance(info.value, ValueError)
    with pytest.raises(MissingColumnError, match="missing required columns 'text', 'age'"):
        read_manifest(path, {"text": str, "age": float})


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".parquet", ".jsonl", ".ndjson"])
def test_formats_round_trip(tmp_path: Path, suffix: str) -> None:
    df = _frame()
    path = tmp_path / f"m{suffix}"
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(path, orient="records", lines=True)
    else:
        df.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    out = read_manifest(path, {"path": str, "text": str, "label": int, "patient_id": str, "age": float})
    assert list(out.columns) == list(df.columns) and len(out) == 3
    assert out["patient_id"].tolist() == ["00017", "00017", "00420"]  # leading zeros kept
    assert out["label"].tolist() == [1, 0, 1]


def test_invalid_values_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("path,text,label\na.png,fine,1\nb.png,,0\nc.png,ok,1\n")
    with pytest.raises(InvalidValueError, match=r"manifest .*bad\.csv: column 'text' has empty values at row 1$"):
        read_manifest(path, ["path", "text"])
    path.write_text("path,text,label\na.png,x,1\nb.png,y,maybe\nc.png,z,zero\n")
    with pytest.raises(InvalidValueError, match=r"column 'label' .*expected int, got str 'maybe' at rows 1, 2"):
        read_manifest(path, {"text": str, "label": int})
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"path": "a", "text": "t"}\n{"path": "b", "text": "   "}\n{"path": "c", "text": 3}\n')
    with pytest.raises(InvalidValueError, match="column 'text' has empty values at row 1"):
        read_manifest(jl, {"text": str})
    jl.write_text('{"path": "a", "text": "t"}\n{"path": "c", "text": 3}\n')
    with pytest.raises(InvalidValueError, match="expected str, got int 3 at row 1"):
        read_manifest(jl, {"text": str})


def test_format_and_parse_errors(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedFormatError, match=r"unsupported suffix '\.xlsx'"):
        read_manifest(tmp_path / "m.xlsx")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read_manifest(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ManifestError, match="empty.csv: file is empty"):
        read_manifest(empty)
    header_only = tmp_path / "h.csv"
    header_only.write_text("path,text\n")
    with pytest.raises(ManifestError, match="no data rows"):
        read_manifest(header_only, ["path"])
    assert len(read_manifest(header_only, ["path"], allow_empty=True)) == 0
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not a parquet file")
    with pytest.raises(ManifestError, match="broken.parquet: cannot parse as parquet"):
        read_manifest(broken)
