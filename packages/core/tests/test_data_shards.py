"""Sharded streaming (vlp_core.data.shards): round trip against the source samples, manifest checks, failures that
name the shard and sample range, a killed writer that resumes, and the same through a local S3 emulator."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vlp_core.data import collate_batch
from vlp_core.data.shards import (
    MANIFEST_NAME,
    ShardConfigError,
    ShardDataset,
    ShardError,
    ShardLoader,
    config_hash,
    write_shards,
)

SCRIPT = Path(__file__).with_name("shards_writer_script.py")
_spec = importlib.util.spec_from_file_location("shards_writer_script", SCRIPT)
toy = importlib.util.module_from_spec(_spec)
sys.modules["shards_writer_script"] = toy
_spec.loader.exec_module(toy)

EXPECTED_IDS = sorted(f"rec{i:03d}" for i in range(toy.N) if i != 13)


def _write(out: Any, **kw: Any) -> dict:
    return write_shards(toy.make_sample, list(range(toy.N)), out, domain="toy", config=toy.CONFIG, split="train",
                        chunk_bytes=4000, num_workers=2, progress=False, **kw)  # fmt: skip


def _assert_same_as_source(item: dict, source: dict) -> None:
    assert set(item) == set(source)
    for key, want in source.items():
        got = item[key]
        if isinstance(want, np.ndarray):
            assert isinstance(got, torch.Tensor) and got.dtype == torch.from_numpy(want).dtype, key
            assert torch.equal(got, torch.from_numpy(want)), key
        else:
            assert got == want, key


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "train"
    _write(out)
    return out


def test_round_trip_returns_every_source_sample_exactly(local_shards: Path) -> None:
    manifest = json.loads((local_shards / MANIFEST_NAME).read_text())
    assert manifest["n_samples"] == toy.N - 1 and manifest["n_skipped"] == 1
    assert manifest["n_shards"] > 3  # several shards per writer worker
    assert manifest["config_hash"] == config_hash(toy.CONFIG) and manifest["domain"] == "toy"
    ds = ShardDataset(local_shards)
    assert len(ds) == toy.N - 1
    seen = []
    for g in range(len(ds)):
        item = ds[g]
        i = int(item["id"][3:])
        _assert_same_as_source(item, toy.make_sample(i))
        seen.append(item["id"])
    assert sorted(seen) == EXPECTED_IDS
    # Through the loader (2 workers, ragged clips padded by core's collate): every sample once, none repeated.
    loader = ShardLoader(ShardDataset(local_shards), batch_size=4, num_workers=2, collate_fn=collate_batch)
    batches = list(loader)
    ids = [i for b in batches for i in b["id"]]
    assert sorted(ids) == EXPECTED_IDS
    assert batches[0]["clip"].ndim == 5 and "clip_mask" in batches[0]


def test_training_order_is_seeded_and_drops_only_the_tail(local_shards: Path) -> None:
    def order(seed: int, epochs: int = 2) -> list[list[str]]:
        loader = ShardLoader(ShardDataset(local_shards, train=True, seed=seed), batch_size=4, drop_last=True,
                             collate_fn=collate_batch)  # fmt: skip
        return [[i for b in loader for i in b["id"]] for _ in range(epochs)]

    a, b, c = order(0), order(0), order(1)
    assert a == b and a != c
    assert a[0] != a[1]  # reshuffled each epoch
    for epoch in a:
        assert len(epoch) == (toy.N - 1) // 4 * 4 and len(set(epoch)) == len(epoch)
        assert set(epoch) <= set(EXPECTED_IDS)


def test_another_preprocessing_config_is_an_error_that_says_so(local_shards: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardConfigError, match=r"another preprocessing config .*size: shards 8, this run 16"):
        ShardDataset(local_shards, expect_config={"size": 16})
    with pytest.raises(ShardConfigError, match="another preprocessing config"):
        ShardDataset(local_shards, expect_config_hash=config_hash({**toy.CONFIG, "size": 16}))
    with pytest.raises(ShardConfigError, match="domain 'toy', not 'ecg'"):
        ShardDataset(local_shards, expect_domain="ecg")
    ShardDataset(local_shards, expect_config={"size": 8, "window": (-1000, 1000)}, expect_domain="toy")
    # Writing another config into a finished split is refused too.
    with pytest.raises(ShardConfigError, match="already holds finished toy/train shards"):
        write_shards(toy.make_sample, [0, 1], local_shards, domain="toy", config={"size": 16}, split="train",
                     progress=False)  # fmt: skip
    with pytest.raises(ShardError, match="vlp_shards.json missing"):
        ShardDataset(tmp_path)


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_missing_or_corrupt_shard_names_the_shard_and_sample_range(local_shards: Path, tmp_path: Path) -> None:
    shards = json.loads((local_shards / MANIFEST_NAME).read_text())["shards"]
    s = shards[2]
    where = rf"shard {s['file']} \(samples {s['first']}-{s['first'] + s['n'] - 1} of {toy.N - 1}\)"

    missing = _copy(local_shards, tmp_path / "missing")
    (missing / s["file"]).unlink()
    with pytest.raises(ShardError, match=where + " is missing"):
        ShardDataset(missing)

    truncated = _copy(local_shards, tmp_path / "truncated")
    data = (truncated / s["file"]).read_bytes()
    (truncated / s["file"]).write_bytes(data[:-100])
    with pytest.raises(ShardError, match=where + rf" is corrupt: {len(data) - 100} bytes"):
        ShardDataset(truncated)

    flipped = _copy(local_shards, tmp_path / "flipped")
    raw = bytearray((flipped / s["file"]).read_bytes())
    raw[-40] ^= 0xFF  # inside the last sample's arrays: same size, different content
    (flipped / s["file"]).write_bytes(bytes(raw))
    ds = ShardDataset(flipped)
    for g in range(s["first"], s["first"] + s["n"] - 1):
        ds[g]  # the other samples of the shard still read
    with pytest.raises(ShardError, match=where + rf" is corrupt at sample {s['first'] + s['n'] - 1}"):
        ds[s["first"] + s["n"] - 1]


def test_killed_writer_resumes_without_rewriting_complete_shards(tmp_path: Path, local_shards: Path) -> None:
    out = tmp_path / "train"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    killed = subprocess.run([sys.executable, str(SCRIPT), str(out), "50"], capture_output=True, text=True,
                            timeout=300, start_new_session=True, env=env)  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / MANIFEST_NAME).exists()
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.bin")}
    assert len(before) >= 2  # complete shards exist from the killed run
    with pytest.raises(ShardError, match="writer did not finish"):
        ShardDataset(out)
    killed = subprocess.run([sys.executable, str(SCRIPT), str(out), "57"], capture_output=True, text=True,
                            timeout=300, start_new_session=True, env=env)  # killed a second time  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300,
                          env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("*.bin")}
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was rewritten"
    assert len(after) > len(before)
    ds, ref = ShardDataset(out), ShardDataset(local_shards)
    assert len(ds) == len(ref)
    got = {ds[g]["id"]: ds[g] for g in range(len(ds))}
    assert sorted(got) == EXPECTED_IDS
    for sid, item in got.items():
        _assert_same_as_source(item, toy.make_sample(int(sid[3:])))


def test_s3_emulator_round_trip_and_missing_remote_shard(s3_emulator: dict, tmp_path: Path) -> None:
    import boto3

    url = "s3://vlp-test/toy/train"
    manifest = _write(url, storage_options=s3_emulator, staging_dir=tmp_path / "staging")
    assert not (tmp_path / "staging").exists()  # staging removed once uploaded
    assert _write(url, storage_options=s3_emulator) == manifest  # finished: nothing rewritten
    ds = ShardDataset(url, storage_options=s3_emulator, cache_dir=str(tmp_path / "cache"), expect_domain="toy",
                      expect_config=toy.CONFIG)  # fmt: skip
    loader = ShardLoader(ds, batch_size=5, num_workers=2, collate_fn=collate_batch)
    items = {}
    for b in loader:
        for k, sid in enumerate(b["id"]):
            items[sid] = {"volume": b["volume"][k], "labels": b["labels"][k], "text": b["text"][k]}
    assert sorted(items) == EXPECTED_IDS
    for sid, item in items.items():
        src = toy.make_sample(int(sid[3:]))
        assert torch.equal(item["volume"], torch.from_numpy(src["volume"])) and item["text"] == src["text"]
    s = manifest["shards"][1]
    boto3.client("s3", **s3_emulator).delete_object(Bucket="vlp-test", Key=f"toy/train/{s['file']}")
    with pytest.raises(ShardError, match=rf"{url}: shard {s['file']} \(samples {s['first']}-.* is missing"):
        ShardDataset(url, storage_options=s3_emulator, cache_dir=str(tmp_path / "cache2"))
