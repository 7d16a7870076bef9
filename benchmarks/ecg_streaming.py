"""ECG training-loader throughput: sharded streaming (litdata) vs the memory-mapped store, on the same ECG data.

Same synthetic PTB-XL records, prepared once both ways (12 leads x 10 s at 100 Hz, float32: 48 kB per record), read
through the real training loaders of ``ECGDataModule`` (z-scored items, core's collate, batch 64, ``drop_last``):

* ``memmap``: ``store=`` (the default for small data);
* ``shards, local``: ``shards=`` a local folder;
* ``shards, S3 (cold)``: ``shards=s3://...`` on a local S3 emulator (moto, a separate process on 127.0.0.1) with an
  empty chunk cache for every epoch, so every shard is fetched over HTTP.

Each row is samples/s over one full training epoch with a freshly built loader (worker start-up included), for 0 and
2 loader workers; settings are interleaved (A B C A B C ...) and the median of ``--repeats`` epochs is reported with
the ratio to the memmap store at the same worker count.

    uv run python benchmarks/ecg_streaming.py --n 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import env_line, interleaved, median, repro_command  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_s3() -> tuple[subprocess.Popen, dict]:
    import boto3

    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    opts = {"endpoint_url": f"http://127.0.0.1:{port}", "aws_access_key_id": "bench",
            "aws_secret_access_key": "bench", "region_name": "us-east-1"}  # fmt: skip
    for _ in range(200):
        try:
            boto3.client("s3", **opts).create_bucket(Bucket="vlp-bench")
            return proc, opts
        except Exception:  # noqa: BLE001 - the emulator is still starting
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the local S3 emulator did not start")


def epoch(make_dm, workers: int) -> tuple[float, int]:
    """Seconds for one training epoch through a fresh loader, and the samples it yielded."""
    dm = make_dm(workers)
    dm.setup("fit")
    t = time.perf_counter()
    n = 0
    for batch in dm.train_dataloader():
        n += len(batch["key"])
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000, help="records (80 % train)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    from vlp_ecg.datasets import ECGDataModule, LoadConfig, prepare_shards, prepare_store, ptbxl_index
    from vlp_ecg.synth import make_fake_ptbxl

    proc, opts = _start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_p = Path(tmp)
            root = make_fake_ptbxl(tmp_p / "ptbxl", args.n, rates=(100,), seed=0)
            index = ptbxl_index(root, sampling_rate=100, labels="all")
            cfg = LoadConfig(target_fs=100.0, duration=10.0)
            t = time.perf_counter()
            prepare_store(index, tmp_p / "store", cfg, progress=False)
            t_store = time.perf_counter() - t
            t = time.perf_counter()
            res = prepare_shards(index, str(tmp_p / "shards"), cfg, num_workers=2, progress=False)
            t_shards = time.perf_counter() - t
            prepare_shards(index, "s3://vlp-bench/ecg", cfg, num_workers=2, storage_options=opts, progress=False)
            train = res["splits"]["train"]
            caches = iter(range(10**6))

            def memmap(w: int) -> ECGDataModule:
                return ECGDataModule(store=str(tmp_p / "store"), batch_size=args.batch, num_workers=w)

            def local(w: int) -> ECGDataModule:
                return ECGDataModule(shards=str(tmp_p / "shards"), batch_size=args.batch, num_workers=w)

            def s3_cold(w: int) -> ECGDataModule:
                return ECGDataModule(shards="s3://vlp-bench/ecg", batch_size=args.batch, num_workers=w,
                                     storage_options=opts, cache_dir=str(tmp_p / f"cache{next(caches)}"))  # fmt: skip

            rows = []
            # 2 workers first: an epoch read in this process (0 workers) leaves litdata/obstore threads behind
            # that forked workers would then compete with.
            for w in (2, 0):
                counts: dict[str, int] = {}

                def timed(make, name, w=w, counts=counts):
                    def fn() -> float:
                        sec, n = epoch(make, w)
                        counts[name] = n
                        return sec

                    return fn

                times = interleaved({"memmap": timed(memmap, "memmap"), "shards, local": timed(local, "shards, local"),
                                     "shards, S3 (cold)": timed(s3_cold, "shards, S3 (cold)")}, args.repeats)  # fmt: skip
                base = counts["memmap"] / median(times["memmap"])
                for name, ts in times.items():
                    rate = counts[name] / median(ts)
                    rows.append((name, w, counts[name], rate, rate / base))
    finally:
        proc.kill()
    print(env_line())
    print(f"command: {repro_command()}")
    print(f"prepare (s): memmap {t_store:.1f} (1 process), shards {t_shards:.1f} (2 workers); "
          f"{train['n_samples']} train samples in {train['n_shards']} shards of "
          f"{sum(s['bytes'] for s in train['shards']) / train['n_samples'] / 1e3:.1f} kB/sample")  # fmt: skip
    print("| loader | workers | samples/epoch | samples/s (median) | vs memmap |")
    print("|---|---|---|---|---|")
    for name, w, n, rate, ratio in sorted(rows, key=lambda r: r[1]):
        print(f"| {name} | {w} | {n} | {rate:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
