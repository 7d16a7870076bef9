from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vlp_core.data import BadInputError
from vlp_ecg.datasets import (
    ECGStore,
    ECGTextDataset,
    LoadConfig,
    aggregate_scp,
    clean_report,
    collate_ecg,
    labels_to_matrix,
    load_scp_statements,
    manifest_index,
    mimic_index,
    prepare_store,
    ptbdb_index,
    ptbdb_text,
    ptbxl_index,
    split_sentences,
)
from vlp_ecg.io import STANDARD_LEADS, ECGBadInputError, write_record
from vlp_ecg.synth import make_fake_mimic, synthesize_ecg

from .conftest import sample_record


def test_labels_to_matrix_aligns_by_name() -> None:
    labels = [["AVB", "ISC"], ["RAO/RAE"], []]
    a = labels_to_matrix(labels, ["AVB", "RAO/RAE", "ISC"])
    b = labels_to_matrix(labels, ["ISC", "AVB", "RAO/RAE"])  # MERL's train/test CSVs disagreed on this order
    np.testing.assert_array_equal(a[:, [0, 1, 2]], b[:, [1, 2, 0]])
    assert a.tolist() == [[1, 0, 1], [0, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="duplicate"):
        labels_to_matrix(labels, ["AVB", "AVB"])


def test_ptbxl_index_aggregates_by_name_and_splits_by_fold(fake_ptbxl: Path, tmp_path: Path) -> None:
    idx = ptbxl_index(fake_ptbxl, labels="all")
    db = pd.read_csv(fake_ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    assert len(idx.frame) == len(db) == 200
    for _, row in idx.frame.iterrows():
        r = db.loc[int(row["key"])]
        assert row["labels"] == sorted(ast.literal_eval(r["scp_codes"]))
        fold = int(r["strat_fold"])
        assert row["split"] == {9: "val", 10: "test"}.get(fold, "train")
        assert row["path"].endswith(r["filename_lr"]) and row["text"] == clean_report(r["report"])
    # Aggregation reads statement *names*: shuffling the rows of scp_statements.csv changes nothing.
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    (shuffled / "ptbxl_database.csv").write_bytes((fake_ptbxl / "ptbxl_database.csv").read_bytes())
    load_scp_statements(fake_ptbxl).sample(frac=1.0, random_state=3).to_csv(shuffled / "scp_statements.csv")
    for level in ("superclass", "subclass", "form", "rhythm"):
        a, b = ptbxl_index(fake_ptbxl, labels=level), ptbxl_index(shuffled, labels=level)
        assert a.classes == b.classes and list(a.frame["labels"]) == list(b.frame["labels"])
    sup = ptbxl_index(fake_ptbxl, labels="superclass")
    assert set(sup.classes) <= {"NORM", "CD"} and "CD" in sup.classes
    rhythm = ptbxl_index(fake_ptbxl, labels="rhythm")
    assert set(rhythm.classes) == {"SR", "SBRAD", "STACH", "AFIB"}


def test_aggregate_scp_levels_and_likelihood() -> None:
    stmts = pd.DataFrame(
        {"description": ["d"] * 4, "diagnostic": [1.0, 1.0, None, None], "form": [None, None, 1.0, None],
         "rhythm": [None, None, None, 1.0], "diagnostic_class": ["MI", "CD", None, None],
         "diagnostic_subclass": ["IMI", "CLBBB", None, None]},
        index=["IMI", "CLBBB", "PVC", "AFIB"],
    )  # fmt: skip
    codes = {"IMI": 50.0, "CLBBB": 100.0, "PVC": 0.0, "AFIB": 0.0, "UNKNOWN": 100.0}
    assert aggregate_scp(codes, stmts, "superclass") == ["CD", "MI"]
    assert aggregate_scp(codes, stmts, "subclass") == ["CLBBB", "IMI"]
    assert aggregate_scp(codes, stmts, "form") == ["PVC"]
    assert aggregate_scp(codes, stmts, "rhythm") == ["AFIB"]
    assert aggregate_scp(codes, stmts, "superclass", min_likelihood=80) == ["CD"]
    with pytest.raises(ValueError, match="unknown label level"):
        aggregate_scp(codes, stmts, "nope")


def test_scp_codes_parsed_safely(fake_ptbxl: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    db = pd.read_csv(fake_ptbxl / "ptbxl_database.csv", index_col="ecg_id")
    db.loc[db.index[0], "scp_codes"] = "__import__('os').system('echo hacked')"
    db.to_csv(bad / "ptbxl_database.csv")
    (bad / "scp_statements.csv").write_bytes((fake_ptbxl / "scp_statements.csv").read_bytes())
    with pytest.raises(BadInputError, match=r"ecg_id 1: scp_codes .* is not a dict literal"):
        ptbxl_index(bad)


def test_mimic_index_joins_reports_and_missing_codes(tmp_path: Path) -> None:
    root = make_fake_mimic(tmp_path / "mimic", n=6, seed=1)
    mm = pd.read_csv(root / "machine_measurements.csv")
    idx = mimic_index(root, fractions=(0.5, 0.25, 0.25))
    assert "subject_id" not in idx.frame.columns  # patient ids stay out of the index
    for _, row in idx.frame.iterrows():
        m = mm[mm["study_id"] == int(row["key"])].iloc[0]
        parts = [m[f"report_{j}"] for j in range(18) if isinstance(m[f"report_{j}"], str)]
        assert row["text"] == clean_report(". ".join(parts))
        assert np.isnan(row["p_axis"]) == (m["p_axis"] == 29999)  # 29999 -> missing
    assert idx.frame["qrs_axis"].notna().all()
    assert set(idx.frame["split"]) <= {"train", "val", "test"}
    ds = ECGTextDataset(idx, None, cfg=LoadConfig(target_fs=100.0))
    assert ds[0]["ecg"]["signal"].shape == (12, 1000)
    # A bad MIMIC record is named by its study, never by its path (which holds the patient id).
    dat = Path(idx.frame["path"][1] + ".dat")
    dat.write_bytes(dat.read_bytes()[:100])
    with pytest.raises(ECGBadInputError, match=rf"^MIMIC-IV-ECG study {idx.frame['key'][1]}: truncated") as err:
        ds[1]
    assert "/p1000" not in str(err.value) and "p100000" not in str(err.value)


def test_ptbdb_text_from_real_header(tmp_path: Path) -> None:
    path = sample_record("ptbdb", "s0010_re")
    idx = ptbdb_index(Path(path).parent)
    row = idx.frame.iloc[0]
    assert row["key"] == "s0010_re"
    assert "reason for admission: myocardial infarction" in row["text"]
    assert "infero-latera" in row["text"] and "n/a" not in row["text"]
    assert row["labels"] == ["myocardial infarction"]
    text, labels = ptbdb_text(["Reason for admission: n/a", "Smoker: no"])
    assert text == "" and labels == []


def test_manifest_index_and_sentences(tmp_path: Path) -> None:
    e = synthesize_ecg(["AFIB"], fs=100, seed=0)
    write_record(tmp_path / "recs" / "a", e.signal, 100, STANDARD_LEADS)
    write_record(tmp_path / "recs" / "b", e.signal, 100, STANDARD_LEADS)
    pd.DataFrame({"path": ["recs/a", "recs/b"], "text": ["Atrial fibrillation; LBBB", "*** EKG normal ***"],
                  "labels": ["AFIB;CLBBB", "NORM"], "split": ["train", "test"]}).to_csv(tmp_path / "m.csv", index=False)  # fmt: skip
    idx = manifest_index(tmp_path / "m.csv")
    assert idx.classes == ["AFIB", "CLBBB", "NORM"]
    assert idx.frame["text"].tolist() == ["atrial fibrillation; lbbb.", "ecg normal."]
    assert Path(idx.frame["path"][0]) == tmp_path / "recs" / "a"
    assert split_sentences("sinus rhythm. lbbb; st elevation.\nnormal axis") == [
        "sinus rhythm", "lbbb", "st elevation", "normal axis"]  # fmt: skip


def test_store_matches_direct_loading(fake_ptbxl: Path, fake_store: Path) -> None:
    store = ECGStore(fake_store)
    idx = ptbxl_index(fake_ptbxl, labels="all")
    assert len(store) == 200 and store.fs == 100.0 and store.leads == list(STANDARD_LEADS)
    direct = ECGTextDataset(idx, "test")
    stored = ECGTextDataset(store, "test")
    assert direct.classes == stored.classes and len(direct) == len(stored) == 20
    for i in (0, 7):
        a, b = direct[i], stored[i]
        assert a["key"] == b["key"] and a["text"] == b["text"]
        np.testing.assert_allclose(a["ecg"]["signal"].numpy(), b["ecg"]["signal"].numpy(), atol=1e-5)
        np.testing.assert_array_equal(a["ecg"]["rpeaks"].numpy(), b["ecg"]["rpeaks"].numpy())
        np.testing.assert_array_equal(a["labels"].numpy(), b["labels"].numpy())
    batch = collate_ecg([stored[i] for i in range(4)])
    assert batch["ecg"]["signal"].shape == (4, 12, 1000) and batch["labels"].shape == (4, len(stored.classes))
    # Per-lead z-score is the default.
    x = stored[0]["ecg"]["signal"].numpy()
    np.testing.assert_allclose(x.mean(1), 0, atol=1e-4)


def test_dataset_augmentation_seeded(fake_store: Path) -> None:
    aug = [{"name": "noise", "std": 0.05}, {"name": "amplitude_scale"}]
    a = ECGTextDataset(ECGStore(fake_store), "train", augment=aug, lead_mask_p=0.3, seed=1)
    b = ECGTextDataset(ECGStore(fake_store), "train", augment=aug, lead_mask_p=0.3, seed=1)
    np.testing.assert_array_equal(a[3]["ecg"]["signal"].numpy(), b[3]["ecg"]["signal"].numpy())
    a.set_epoch(1)
    assert not np.array_equal(a[3]["ecg"]["signal"].numpy(), b[3]["ecg"]["signal"].numpy())


def _bad_tree(tmp_path: Path) -> Path:
    """Four records: good, truncated .dat, NaN-free but flat lead, empty report."""
    rows = []
    for k, kind in enumerate(["good", "truncated", "flat", "empty", "good"]):
        e = synthesize_ecg(["SR"], fs=100, seed=k)
        sig = e.signal.copy()
        if kind == "flat":
            sig[3] = 0.0
        fn = f"records100/00000/{k + 1:05d}_lr"
        write_record(tmp_path / fn, sig, 100, STANDARD_LEADS)
        if kind == "truncated":
            dat = tmp_path / f"{fn}.dat"
            dat.write_bytes(dat.read_bytes()[:500])
        rows.append({"ecg_id": k + 1, "scp_codes": "{'SR': 0.0}", "strat_fold": 1, "filename_lr": fn,
                     "filename_hr": fn, "report": "" if kind == "empty" else "sinus rhythm"})  # fmt: skip
    pd.DataFrame(rows).set_index("ecg_id").to_csv(tmp_path / "ptbxl_database.csv")
    pd.DataFrame({"description": ["sinus rhythm"], "diagnostic": [None], "form": [None], "rhythm": [1.0],
                  "diagnostic_class": [None], "diagnostic_subclass": [None]}, index=["SR"]).to_csv(
        tmp_path / "scp_statements.csv")  # fmt: skip
    return tmp_path


def test_bad_records_raise_or_are_skipped_and_counted(tmp_path: Path) -> None:
    idx = ptbxl_index(_bad_tree(tmp_path / "tree"), labels="rhythm")
    with pytest.raises(ECGBadInputError, match=r"00002_lr: truncated signal file"):
        prepare_store(idx, tmp_path / "store_strict", progress=False)
    meta = prepare_store(idx, tmp_path / "store", skip_bad=True, progress=False)
    assert meta["n"] == 2 and meta["skipped"]["n_skipped"] == 3
    assert meta["skipped"]["keys"] == ["2", "3", "4"]
    assert ECGStore(tmp_path / "store").index["key"].tolist() == ["1", "5"]
    with pytest.raises(ECGBadInputError, match=r"00004_lr: empty report text"):
        ECGTextDataset(idx, "train")[3]
    with pytest.raises(ECGBadInputError, match=r"00003_lr: lead aVR is flat"):
        ECGTextDataset(idx, "train")[2]
    ds = ECGTextDataset(idx, "train", skip_bad=True)
    batch = collate_ecg([ds[i] for i in range(len(ds))])
    assert batch["key"] == ["1", "5"] and ds.policy.report()["n_skipped"] == 3
    with pytest.raises(ECGBadInputError, match="sampling rate is 100 Hz but the configuration expects 500 Hz"):
        ECGTextDataset(idx, "train", cfg=LoadConfig(expected_fs=500.0))[0]


def test_datamodule_augmentation_depends_on_epoch_not_worker_state(fake_store: Path) -> None:
    from vlp_ecg.datasets import ECGDataModule

    dm = ECGDataModule(store=str(fake_store), batch_size=16, seed=3, augment=[{"name": "noise", "std": 0.1}])
    dm.setup("fit")

    def epoch(e: int) -> dict[str, np.ndarray]:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(e)
        return {k: x.numpy() for b in loader for k, x in zip(b["key"], b["ecg"]["signal"])}

    e0, e1, e0_again = epoch(0), epoch(1), epoch(0)
    assert set(e0) == set(e1) and len(e0) == 160
    key = sorted(e0)[0]
    np.testing.assert_array_equal(e0[key], e0_again[key])  # same (seed, epoch, index) -> same draw
    assert not np.array_equal(e0[key], e1[key])  # a new epoch -> new augmentation


def test_prepare_counts_repaired_masked_and_skipped_nan_records(tmp_path: Path, capsys) -> None:
    import wfdb

    from vlp_ecg.cli import prepare
    from vlp_ecg.synth import synthesize_ecg

    root = tmp_path / "tree"
    rows = []
    for k, kind in enumerate(["clean", "three_nan", "long_gap", "clean"]):
        sig = synthesize_ecg(["SR"], fs=100, duration=10.0, seed=k).signal.astype(np.float64)
        if kind == "three_nan":
            sig[1, 300:303] = np.nan
        if kind == "long_gap":
            sig[7, 200:230] = np.nan  # 300 ms
        fn = f"records100/00000/{k + 1:05d}_lr"
        (root / fn).parent.mkdir(parents=True, exist_ok=True)
        wfdb.wrsamp(Path(fn).name, fs=100, units=["mV"] * 12, sig_name=list(STANDARD_LEADS), p_signal=sig.T,
                    fmt=["16"] * 12, adc_gain=[1000] * 12, baseline=[0] * 12, write_dir=str((root / fn).parent))  # fmt: skip
        rows.append({"ecg_id": k + 1, "scp_codes": "{'SR': 0.0}", "strat_fold": 1, "filename_lr": fn,
                     "filename_hr": fn, "report": "sinus rhythm"})  # fmt: skip
    pd.DataFrame(rows).set_index("ecg_id").to_csv(root / "ptbxl_database.csv")
    pd.DataFrame({"description": ["sinus rhythm"], "diagnostic": [None], "form": [None], "rhythm": [1.0],
                  "diagnostic_class": [None], "diagnostic_subclass": [None]}, index=["SR"]).to_csv(
        root / "scp_statements.csv")  # fmt: skip
    with pytest.raises(ECGBadInputError, match=r"00003_lr: lead V2 has 30 invalid"):
        prepare("ptbxl", str(root), str(tmp_path / "strict"), labels="rhythm", progress=False)
    meta = prepare("ptbxl", str(root), str(tmp_path / "s1"), labels="rhythm", skip_bad=True, progress=False)
    assert meta["n"] == 3 and meta["repairs"]["records_interpolated"] == 1
    assert meta["repairs"]["samples_interpolated"] == 3
    assert meta["skipped"]["by_type"] == {"ECGInvalidSamplesError": 1} and meta["skipped"]["keys"] == ["3"]
    line = capsys.readouterr().out
    assert "prepared 3 records: 1 repaired (3 invalid samples interpolated), 0 with masked leads" in line
    assert "1 skipped (ECGInvalidSamplesError: 1)" in line
    masked = prepare("ptbxl", str(root), str(tmp_path / "s2"), labels="rhythm", nan="mask", progress=False)
    assert masked["n"] == 4 and masked["repairs"]["records_masked"] == 1
    store = ECGStore(tmp_path / "s2")
    assert store.lead_mask[2].tolist() == [i != 7 for i in range(12)]
    assert np.isfinite(np.asarray(store.signals)).all()
    assert "1 with masked leads (1 leads), 0 skipped" in capsys.readouterr().out


def test_fit_refuses_model_fs_different_from_store(fake_store: Path) -> None:
    import lightning as L

    from vlp_ecg.datasets import ECGDataModule
    from vlp_ecg.models import MELP

    dm = ECGDataModule(store=str(fake_store), batch_size=8)
    dm.setup("fit")  # set up by hand first (as the demo does): the check still runs when the trainer sets up
    model = MELP(size="tiny", fs=500.0, embed_dim=16, token_dim=16, text_max_length=16, weights={"token": 0})
    trainer = L.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    with pytest.raises(ValueError, match=r"expects 500 Hz but the store .* is at 100 Hz"):
        trainer.fit(model, datamodule=dm)
