"""ECG shards: `prepare --format shards`, items identical to the memmap store, `fit` from shards, config checks, and
a 2-rank DDP run streaming from a local folder and from a local S3 emulator that is killed mid-epoch, resumed, and
sees exactly the sample ids of an uninterrupted run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest
import torch

from vlp_core.data.shards import ShardConfigError
from vlp_ecg.cli import main, prepare
from vlp_ecg.datasets import ECGDataModule

SCRIPT = Path(__file__).with_name("ddp_shards_script.py")


@pytest.fixture(scope="module")
def small_ptbxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlp_ecg.synth import make_fake_ptbxl

    return make_fake_ptbxl(tmp_path_factory.mktemp("ptbxl80"), 80, rates=(100,), seed=1)


@pytest.fixture(scope="module")
def ecg_shards(small_ptbxl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ecg") / "shards"
    rc = main(["prepare", "ptbxl", str(small_ptbxl), str(out), "--labels", "all", "--format", "shards",
               "--num_workers", "2", "--chunk_bytes", "200KB", "--progress", "false"])  # fmt: skip
    assert rc == 0
    return out


def test_shard_items_equal_the_memmap_store_items(ecg_shards: Path, small_ptbxl: Path, tmp_path: Path) -> None:
    manifest = json.loads((ecg_shards / "train" / "vlp_shards.json").read_text())
    assert manifest["domain"] == "ecg" and manifest["config"]["target_fs"] == 100.0 and manifest["n_shards"] > 4
    prepare("ptbxl", str(small_ptbxl), str(tmp_path / "store"), labels="all", progress=False)
    from_shards = ECGDataModule(shards=str(ecg_shards), batch_size=4)
    from_store = ECGDataModule(store=str(tmp_path / "store"), batch_size=4)
    from_shards.setup("fit")
    from_store.setup("fit")
    for name in ("train", "val", "test"):
        ref = getattr(from_store, f"{name}_set")
        by_key = {ref[i]["key"]: ref[i] for i in range(len(ref))}
        ds = getattr(from_shards, f"{name}_set")
        items = [ds[g] for g in range(len(ds))]
        assert sorted(it["key"] for it in items) == sorted(by_key), name
        for it in items:
            want = by_key[it["key"]]
            assert it["text"] == want["text"]
            torch.testing.assert_close(it["labels"], want["labels"], rtol=0, atol=0)  # same classes, by name
            for k in ("signal", "lead_mask", "rpeaks"):
                torch.testing.assert_close(it["ecg"][k], want["ecg"][k], rtol=0, atol=0, msg=k)
    assert from_shards.train_set.extra["classes"] == from_store.train_set.classes


def test_shards_prepared_at_another_rate_are_refused(ecg_shards: Path) -> None:
    dm = ECGDataModule(shards=str(ecg_shards), target_fs=500.0)
    with pytest.raises(ShardConfigError, match=r"target_fs: shards 100\.0, this run 500\.0"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="not both"):
        ECGDataModule(shards=str(ecg_shards), store="somewhere")


def test_fit_reads_data_shards_from_the_cli(ecg_shards: Path, tmp_path: Path) -> None:
    config = files("vlp_ecg") / "configs" / "tiny_synthetic.yaml"
    rc = main(["fit", "--config", str(config), "--data.store", "null", "--data.init_args.shards", str(ecg_shards),
               "--data.batch_size", "8", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0",
               "--trainer.default_root_dir", str(tmp_path / "run")])  # fmt: skip
    assert rc == 0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(source: str, out: Path, *args: str, env: dict | None = None, kill: bool = False) -> None:
    """Both ranks started at once, as torchrun or SLURM would (Lightning then launches nothing itself). Output goes
    to files, not pipes (a killed rank's loader workers must not hold a pipe open), and each rank's process group,
    workers included, is killed afterwards."""
    out.mkdir(parents=True, exist_ok=True)
    base = {**os.environ, **(env or {}), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
            "WORLD_SIZE": "2", "NODE_RANK": "0"}  # fmt: skip
    procs = []
    try:
        for r in (0, 1):
            log = (out / f"{args[0]}-rank{r}.log").open("w")
            procs.append((subprocess.Popen([sys.executable, str(SCRIPT), source, str(out), *args], stdout=log,
                                           stderr=subprocess.STDOUT, env={**base, "LOCAL_RANK": str(r)},
                                           start_new_session=True), log))  # fmt: skip
        for proc, _ in procs:
            proc.wait(timeout=400)
    finally:
        for proc, log in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()
    for r, (proc, _) in enumerate(procs):
        tail = (out / f"{args[0]}-rank{r}.log").read_text()[-3000:]
        assert proc.returncode == (-9 if kill else 0), f"rank {r}: {tail}"


def _steps(out: Path, mode: str) -> dict[int, dict[int, list[str]]]:
    """{rank: {step: ids}} of one run."""
    res: dict[int, dict[int, list[str]]] = {0: {}, 1: {}}
    for rank in (0, 1):
        for line in (out / f"ids-{mode}-rank{rank}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            res[rank][rec["step"]] = rec["ids"]
    return res


def test_ddp_streaming_killed_mid_epoch_resumes_with_exactly_the_same_ids(
    ecg_shards: Path, small_ptbxl: Path, s3_emulator: dict, tmp_path: Path
) -> None:
    """2 ranks x 2 loader workers, 8 steps per epoch: checkpoint at step 11 (mid second epoch), SIGKILL at step 13,
    resume to step 16; the ids of steps 1-11 of the killed run plus 12-16 of the resumed run equal the ids of an
    uninterrupted run, step by step on each rank, for a local folder and for the S3 emulator."""
    sys.path.insert(0, str(SCRIPT.parent))
    import ddp_shards_script as script

    sys.path.pop(0)
    url = "s3://vlp-test/ecg/ptbxl80"
    prepare("ptbxl", str(small_ptbxl), url, labels="all", format="shards", num_workers=2, chunk_bytes="200KB",
            storage_options=s3_emulator, progress=False)  # fmt: skip
    n_train = json.loads((ecg_shards / "train" / "vlp_shards.json").read_text())["n_samples"]
    straight = tmp_path / "straight"
    _run(str(ecg_shards), straight, "straight")
    ref = _steps(straight, "straight")
    per_epoch = n_train // 8  # steps per epoch: 2 ranks x batch 4
    assert len(ref[0]) == len(ref[1]) == script.TOTAL and script.CKPT_STEP % per_epoch != 0
    for epoch in range(script.TOTAL // per_epoch):  # each full epoch: every rank's batches are disjoint, no repeats
        steps = range(epoch * per_epoch + 1, (epoch + 1) * per_epoch + 1)
        ids = Counter(i for r in (0, 1) for s in steps for i in ref[r][s])
        assert max(ids.values()) == 1 and len(ids) == per_epoch * 8
    env_s3 = {"AWS_ENDPOINT_URL": s3_emulator["endpoint_url"], "AWS_ACCESS_KEY_ID": "testing",
              "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for name, source, env in (("local", str(ecg_shards), {}), ("s3", url, env_s3)):
        out = tmp_path / name
        _run(source, out, "first", env=env, kill=True)
        ckpts = sorted((out / "ckpt").glob("*.ckpt"))
        assert len(ckpts) == 1 and f"step={script.CKPT_STEP}" in ckpts[0].name
        _run(source, out, "resume", str(ckpts[0]), env=env)
        first, resumed = _steps(out, "first"), _steps(out, "resume")
        for rank in (0, 1):
            assert max(first[rank]) == script.KILL_STEP  # it really ran past the checkpoint before the kill
            assert sorted(resumed[rank]) == list(range(script.CKPT_STEP + 1, script.TOTAL + 1))
            combined = {s: ids for s, ids in first[rank].items() if s <= script.CKPT_STEP} | resumed[rank]
            assert combined == ref[rank], f"{name} rank {rank}"
        # Count every id: the interrupted run trained on each sample exactly as often as the uninterrupted one.
        total = Counter(i for r in (0, 1) for ids in ref[r].values() for i in ids)
        seen = Counter(i for r in (0, 1) for s, ids in first[r].items() if s <= script.CKPT_STEP for i in ids)
        seen.update(i for r in (0, 1) for ids in resumed[r].values() for i in ids)
        assert sum(total.values()) == script.TOTAL * 8 and seen == total
