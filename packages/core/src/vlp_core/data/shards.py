"""Sharded streaming data for every domain: write prepared samples as litdata shards, stream them under DDP.

A *prepared sample* is a flat dict: ``"id"`` (a unique string, never a patient id), numpy arrays of any shape (an
ECG ``[C, T]``, a clip ``[T, C, H, W]``, a CT volume ``[D, H, W]``, an image ``[C, H, W]``, labels ``[K]``), and
JSON-able values (report text, a list of captions, label names, ints, floats). :func:`write_shards` turns a sequence
of inputs into such samples with a domain function, in parallel worker processes with a progress bar, using
``litdata.optimize``; :class:`ShardDataset` streams them back with seeded shuffling, an even split by rank and
worker, ``drop_last`` and exact mid-epoch resume (``litdata.StreamingDataset``/``StreamingDataLoader``, whose state
Lightning stores in its checkpoints). Nothing here knows a domain: clips, volumes and images go through unchanged.

Layout of one split (a local folder or a URL such as ``s3://bucket/prefix/train``)::

    index.json          litdata's chunk index
    chunk-W-K.bin       the shards (``W`` writer worker, ``K`` its shard number)
    vlp_shards.json     the manifest: domain, split, preprocessing config and its hash, counts, fields, versions

Remote sources take the user's own credentials and endpoint, never hard-coded: ``storage_options`` (passed to
boto3, e.g. ``{"endpoint_url": "https://minio.example:9000", "aws_access_key_id": ..., ...}``) or the standard
AWS environment variables and profiles (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ...).
Plain-``http://`` endpoints (an S3 emulator, an on-premise store without TLS) work too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import litdata
import numpy as np
import torch
from litdata.streaming.downloader import S3Downloader, register_downloader
from litdata.streaming.fs_provider import S3FsProvider
from tqdm.auto import tqdm

from vlp_core.data.errors import BadInputError

__all__ = [
    "MANIFEST_NAME",
    "ShardConfigError",
    "ShardDataset",
    "ShardError",
    "ShardLoader",
    "config_hash",
    "read_manifest_at",
    "shard_sample_to_torch",
    "write_shards",
]

MANIFEST_NAME = "vlp_shards.json"
_PENDING_NAME = "vlp_shards.pending.json"
FORMAT_VERSION = 1
_META, _CRC, _ID = "__meta__", "__crc__", "id"


class ShardError(BadInputError):
    """A shard is missing, truncated or corrupt; the message names the shard and its sample range."""


class ShardConfigError(BadInputError):
    """Shards were prepared with another preprocessing config (or domain/split) than the reader expects."""


# ---------------------------------------------------------------------------------------------------- helpers
def config_hash(config: Mapping[str, Any]) -> str:
    """16-hex SHA-256 of a preprocessing config (canonical JSON: sorted keys, tuples as lists)."""
    text = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _is_remote(url: str) -> bool:
    scheme = urlparse(str(url)).scheme
    return len(scheme) > 1  # "C:" on Windows is a drive, not a scheme


def _join(root: str, name: str) -> str:
    return f"{str(root).rstrip('/')}/{name}" if _is_remote(root) else str(Path(root) / name)


def _vlp_version() -> str:
    try:
        return version("vlp-core")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def _read_json(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON file at a local path or an ``s3://`` URL, or ``None`` when it does not exist."""
    if not _is_remote(url):
        path = Path(url)
        return json.loads(path.read_text()) if path.is_file() else None
    _require_s3(url)
    fs = S3FsProvider(dict(storage_options or {}))
    if not fs.exists(url):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "file.json")
        fs.download_file(url, local)
        return json.loads(Path(local).read_text())


def _write_json(url: str, data: Mapping[str, Any], storage_options: Mapping[str, Any] | None) -> None:
    text = json.dumps(_jsonable(data), indent=2)
    if not _is_remote(url):
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{url}.tmp")
        tmp.write_text(text)
        tmp.replace(url)  # atomic: a reader never sees half a manifest
        return
    _require_s3(url)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "file.json")
        Path(local).write_text(text)
        S3FsProvider(dict(storage_options or {})).upload_file(local, url)


def _require_s3(url: str) -> None:
    if urlparse(url).scheme != "s3":
        raise ValueError(f"{url}: only local folders and s3:// URLs (any S3-compatible store) are supported")


def _shard_sizes(root: str, names: Sequence[str], storage_options: Mapping[str, Any] | None) -> dict[str, int]:
    """Sizes in bytes of the shard files that exist under ``root`` (one listing call for a remote root)."""
    if not _is_remote(root):
        out = {}
        for name in names:
            p = Path(root) / name
            if p.is_file():
                out[name] = p.stat().st_size
        return out
    _require_s3(root)
    parsed = urlparse(root)
    client = S3FsProvider(dict(storage_options or {})).client.client
    prefix = parsed.path.strip("/") + "/"
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=parsed.netloc, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) :]] = int(obj["Size"])
    return out


# ---------------------------------------------------------------------------------------------------- S3 over http
class _S3Downloader(S3Downloader):
    """litdata's S3 downloader, also for plain-``http://`` endpoints.

    litdata moves chunks with obstore, whose HTTP client refuses ``http://`` unless ``allow_http`` is set, and
    litdata gives no way to set it. For an ``http://`` endpoint this builds the same obstore store litdata builds,
    with ``allow_http``; every other endpoint (AWS, https) takes litdata's own path unchanged.
    """

    def _get_store(self, bucket: str) -> Any:
        endpoint = str(self._client.client.meta.endpoint_url or "")
        if not endpoint.startswith("http://"):
            return super()._get_store(bucket)
        from litdata.streaming import downloader as ld_downloader

        def build() -> Any:
            from obstore.store import S3Store

            meta = self._client.client.meta
            config = {"endpoint": endpoint, "virtual_hosted_style_request": False}
            if meta.region_name:
                config["region"] = meta.region_name
            options = {**ld_downloader._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
            provider = ld_downloader._obstore_credential_provider(self._client)
            return S3Store(bucket, config=config, credential_provider=provider, client_options=options)

        return ld_downloader._cached_obstore_store(self, build)


register_downloader("s3://", _S3Downloader, overwrite=True)


# ---------------------------------------------------------------------------------------------------- writer
class _Encode:
    """Picklable wrapper run in the writer workers: domain sample -> stored record (arrays + packed JSON + CRC).

    Inputs arrive as ``(position, input)``. Each worker logs every position it consumes (``ok`` or ``skip``) to
    ``<log_dir>/worker-<rank>.log``; positions in ``done`` (already in complete shards of a killed run) return
    ``None`` without work. This makes litdata's checkpoint resume exact: litdata restarts a worker at an offset
    that counts *samples* where it means *inputs* (wrong once the domain skipped a bad input) and, after a second
    kill, only the samples of the last run; either way it would otherwise write samples twice.
    """

    def __init__(self, fn: Callable[[Any], Mapping[str, Any] | None], log_dir: str, done: set[int]) -> None:
        self.fn, self.log_dir, self.done = fn, log_dir, done

    def __call__(self, item: list[Any]) -> dict[str, Any] | None:
        pos, value = item
        if pos in self.done:
            return None
        sample = self.fn(value)
        rank = os.environ.get("DATA_OPTIMIZER_GLOBAL_RANK", "0")
        with open(os.path.join(self.log_dir, f"worker-{rank}.log"), "a") as f:
            f.write(f"{pos} {'skip' if sample is None else 'ok'}\n")
        return None if sample is None else encode_sample(sample)


def _positions_in_complete_shards(local: Path, log_dir: Path) -> set[int]:
    """Input positions whose samples are in the shards a killed writer completed (its litdata checkpoints), with
    each worker's log cut back to them (what follows is redone)."""
    done: set[int] = set()
    for log in sorted(log_dir.glob("worker-*.log")):
        rank = log.stem.split("-", 1)[1]
        ckpt = local / ".checkpoints" / f"checkpoint-{rank}.json"
        # samples_written counts every shard of the worker, over all runs (litdata's inputs_done restarts at 0)
        n_done = int(json.loads(ckpt.read_text()).get("samples_written", 0)) if ckpt.is_file() else 0
        kept, oks = [], 0
        for line in log.read_text().splitlines():
            if oks >= n_done:
                break
            pos, outcome = line.split()
            kept.append(line)
            if outcome == "ok":
                oks += 1
                done.add(int(pos))
        log.write_text("".join(f"{line}\n" for line in kept))
    return done


def encode_sample(sample: Mapping[str, Any]) -> dict[str, Any]:
    """One prepared sample as a stored record: arrays kept, other values packed as JSON, plus a CRC32 of both.

    Raises:
        BadInputError: no string ``id``, or a value that is neither an array nor JSON-able (names the sample).
    """
    sid = sample.get(_ID)
    if not isinstance(sid, str) or not sid:
        raise BadInputError(f"a prepared sample needs a non-empty string 'id'; got keys {sorted(sample)}")
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for key, value in sample.items():
        if key in (_ID, _META, _CRC):
            continue
        if isinstance(value, torch.Tensor):
            value = value.numpy()
        if isinstance(value, np.ndarray):
            arrays[key] = np.ascontiguousarray(value)
        else:
            try:
                json.dumps(_jsonable(value))
            except TypeError as exc:
                raise BadInputError(f"sample {sid}: field {key!r} ({type(value).__name__}) is not storable") from exc
            meta[key] = _jsonable(value)
    packed = json.dumps(meta, sort_keys=True)
    record: dict[str, Any] = {_ID: sid, _META: packed, **arrays}
    record[_CRC] = str(_crc(sid, packed, arrays))
    return record


def _crc(sid: str, packed: str, arrays: Mapping[str, np.ndarray]) -> int:
    crc = zlib.crc32(sid.encode())
    crc = zlib.crc32(packed.encode(), crc)
    for key in sorted(arrays):
        a = arrays[key]
        crc = zlib.crc32(f"{key}{a.dtype.str}{a.shape}".encode(), crc)
        crc = zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"), crc)
    return crc


def write_shards(
    fn: Callable[[Any], Mapping[str, Any] | None],
    inputs: Sequence[Any],
    out: str | os.PathLike,
    *,
    domain: str,
    config: Mapping[str, Any],
    split: str,
    extra: Mapping[str, Any] | None = None,
    chunk_bytes: int | str = "64MB",
    num_workers: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = True,
    start_method: str | None = None,
    staging_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write one split of prepared samples as litdata shards plus a manifest; resumable after a kill.

    Args:
        fn: picklable function (module-level, or an instance of a module-level class) turning one input into a
            prepared sample (see the module docstring) or ``None`` to skip a bad input. Runs in the workers.
        inputs: what ``fn`` reads (record paths, index rows as dicts, ...), JSON-able (litdata's resume checkpoints
            store them); the order is the stored order per worker.
        out: output folder or URL (``s3://bucket/prefix/train``).
        domain: domain name stored in the manifest (``ecg``, ``surgical``, ``ct3d``, ``medical``, ...).
        config: the preprocessing config; stored with its :func:`config_hash`, checked by readers.
        split: split name stored in the manifest (``train``, ``val``, ``test``).
        extra: other facts for readers (class names, sampling rate, ...), stored as ``manifest["extra"]``.
        chunk_bytes: target shard size (``"64MB"``: large enough for object-store throughput, small enough that
            a rank's first batch does not wait long).
        num_workers: writer processes (default: CPU count, at most one per 16 inputs).
        storage_options: credentials/endpoint for a remote ``out`` (boto3 keywords); default: the environment.
        progress: progress bar.
        start_method: multiprocessing start method (default ``fork`` on Linux: no re-import per worker).
        staging_dir: remote ``out`` only: local folder the shards are written to before upload (default: a folder
            under ``$VLP_SHARD_STAGING`` or the temp dir, named after ``out``, so a re-run finds it). It needs the
            split's size on local disk until the upload has finished.

    Returns:
        The manifest (also written to ``<out>/vlp_shards.json``).

    A writer killed part-way is resumed by calling this again with the same arguments: complete shards are kept
    (litdata's checkpoints), only the rest is written; a remote upload skips the shards already there. Calling it on a finished split returns its manifest and
    writes nothing; a finished split with another config is an error (remove it or choose another ``out``).
    """
    out = str(out)
    cfg_hash = config_hash(config)
    opts = dict(storage_options or {})
    if num_workers is None:
        num_workers = max(1, min(os.cpu_count() or 1, len(inputs) // 16 or 1))
    num_workers = max(1, min(int(num_workers), max(1, len(inputs))))
    job = {"domain": domain, "split": split, "config_hash": cfg_hash, "n_inputs": len(inputs),
           "num_workers": num_workers, "chunk_bytes": str(chunk_bytes)}  # fmt: skip
    done = _read_json(_join(out, MANIFEST_NAME), opts)
    if done is not None:
        if done.get("config_hash") != cfg_hash or done.get("domain") != domain or done.get("split") != split:
            raise ShardConfigError(
                f"{out}: already holds finished {done.get('domain')}/{done.get('split')} shards with preprocessing "
                f"config hash {done.get('config_hash')}, not {domain}/{split} with {cfg_hash}; remove it or write "
                "elsewhere"
            )
        return done
    remote = _is_remote(out)
    if remote:
        _require_s3(out)
    local = Path(staging_dir) if staging_dir else (_default_staging(out) if remote else Path(out))
    local.mkdir(parents=True, exist_ok=True)
    pending = _read_json(str(local / _PENDING_NAME), None)
    if pending is not None and pending != job:
        diff = "; ".join(f"{k}: {pending.get(k)} != {job[k]}" for k in job if pending.get(k) != job.get(k))
        raise ShardConfigError(
            f"{local}: an interrupted write with other settings ({diff}) is in this folder; re-run with the same "
            "settings to finish it, or remove the folder"
        )
    if pending is None:
        stale = [p.name for p in local.iterdir() if p.name.endswith(".bin") or p.name == "index.json"]
        if stale:
            raise ShardConfigError(f"{local}: holds shards without a vlp manifest ({stale[:3]}); remove them first")
        _write_json(str(local / _PENDING_NAME), job, None)
    if not (local / "index.json").is_file():  # not yet merged: (re)run; litdata's checkpoints skip finished shards
        log_dir = local / ".vlp-writer"
        log_dir.mkdir(exist_ok=True)
        done_positions = _positions_in_complete_shards(local, log_dir)
        litdata.optimize(
            fn=_Encode(fn, str(log_dir), done_positions),
            inputs=[[i, x] for i, x in enumerate(inputs)],  # lists: litdata compares them after JSON
            output_dir=str(local),
            chunk_bytes=chunk_bytes,
            num_workers=num_workers,
            use_checkpoint=True,
            keep_data_ordered=True,
            reorder_files=False,
            verbose=progress,
            start_method=start_method or ("fork" if os.name == "posix" else None),
        )
    index = _read_json(str(local / "index.json"), None)
    if index is None:
        raise ShardError(f"{local}: litdata wrote no index.json (was every input skipped?)")
    first, shards = 0, []
    for chunk in index["chunks"]:
        shards.append({"file": chunk["filename"], "first": first, "n": int(chunk["chunk_size"]),
                       "bytes": int(chunk["chunk_bytes"])})  # fmt: skip
        first += int(chunk["chunk_size"])
    manifest = {
        "format": "vlp-shards",
        "format_version": FORMAT_VERSION,
        "domain": domain,
        "split": split,
        "config": _jsonable(dict(config)),
        "config_hash": cfg_hash,
        "n_inputs": len(inputs),
        "n_samples": first,
        "n_skipped": len(inputs) - first,
        "n_shards": len(shards),
        "shards": shards,
        "extra": _jsonable(dict(extra or {})),
        "vlp_version": _vlp_version(),
        "litdata_version": litdata.__version__,
    }
    if remote:  # upload what is not there yet (a re-run after a killed upload skips complete shards)
        fs = S3FsProvider(opts)
        have = _shard_sizes(out, [s["file"] for s in shards], opts)
        for s in tqdm(shards, desc=f"upload {split} shards", disable=not progress):
            if have.get(s["file"]) != s["bytes"]:
                fs.upload_file(str(local / s["file"]), _join(out, s["file"]))
        fs.upload_file(str(local / "index.json"), _join(out, "index.json"))
    _write_json(_join(out, MANIFEST_NAME), manifest, opts)  # last: its presence means "complete"
    if remote:
        shutil.rmtree(local, ignore_errors=True)
    else:
        (local / _PENDING_NAME).unlink(missing_ok=True)
        shutil.rmtree(local / ".checkpoints", ignore_errors=True)
        shutil.rmtree(local / ".vlp-writer", ignore_errors=True)
    return manifest


def _default_staging(out: str) -> Path:
    """Where a remote split is staged before upload: the same folder for the same URL, so re-runs resume."""
    root = Path(os.environ.get("VLP_SHARD_STAGING", Path(tempfile.gettempdir()) / "vlp-shard-staging"))
    return root / hashlib.sha256(out.encode()).hexdigest()[:16]


def read_manifest_at(source: str | os.PathLike, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a shard split; :class:`ShardError` naming the location when there is none."""
    manifest = _read_json(_join(str(source), MANIFEST_NAME), storage_options)
    if manifest is None:
        pending = _read_json(_join(str(source), _PENDING_NAME), storage_options) is not None
        why = "its writer did not finish (re-run the same prepare command to complete it)" if pending else (
            "no vlp shards here (prepare them with write_shards / `<domain> prepare --format shards`)")  # fmt: skip
        raise ShardError(f"{source}: {MANIFEST_NAME} missing: {why}")
    if manifest.get("format") != "vlp-shards" or int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise ShardError(f"{source}/{MANIFEST_NAME}: not a vlp shard manifest of format version <= {FORMAT_VERSION}")
    return manifest


# ---------------------------------------------------------------------------------------------------- reader
def shard_sample_to_torch(sample: dict[str, Any], index: int, epoch: int) -> dict[str, Any]:
    """Default item transform: numpy arrays -> tensors, everything else unchanged (``index``/``epoch`` unused)."""
    return {k: torch.from_numpy(np.array(v)) if isinstance(v, np.ndarray) else v for k, v in sample.items()}


class ShardDataset(litdata.StreamingDataset):
    """Stream one split written by :func:`write_shards` (a local folder or a URL), checked against its manifest.

    Items are the prepared samples (``id``, the arrays as numpy, the JSON values) passed through
    ``transform(sample, index, epoch)`` (``index`` the global sample index, ``epoch`` the loader's epoch: draw
    augmentations from ``(seed, epoch, index)`` for runs that resume exactly). Wrap in :class:`ShardLoader`.

    Args:
        source: split folder or URL.
        expect_domain: refuse shards of another domain.
        expect_config: preprocessing values this run depends on (e.g. ``{"target_fs": 100.0}``); any key whose
            stored value differs is a :class:`ShardConfigError` naming both values and the stored config hash.
        expect_config_hash: refuse shards whose full preprocessing config hash differs.
        train: shuffle (seeded by ``seed`` and the epoch) and drop the tail so every rank and worker gets the
            same number of samples; ``False`` keeps order and every sample.
        seed: shuffling seed.
        transform: picklable item transform (see above); default :func:`shard_sample_to_torch`.
        verify: check each sample's CRC32 (corruption raises :class:`ShardError` naming the shard).
        storage_options: credentials/endpoint for remote sources (boto3 keywords); default: the environment.
        cache_dir: local cache for remote shards (default: litdata's).
        max_cache_size: cache budget, e.g. ``"50GB"``.

    Raises:
        ShardError: manifest missing, or a shard missing or of the wrong size (names the shard and sample range).
        ShardConfigError: another domain, split or preprocessing config than expected.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        *,
        expect_domain: str | None = None,
        expect_split: str | None = None,
        expect_config: Mapping[str, Any] | None = None,
        expect_config_hash: str | None = None,
        train: bool = False,
        seed: int = 0,
        transform: Callable[[dict[str, Any], int, int], Any] | None = None,
        verify: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
        max_cache_size: int | str = "50GB",
    ) -> None:
        self.source = str(source).rstrip("/") if _is_remote(str(source)) else str(source)
        opts = dict(storage_options or {})
        self.manifest = read_manifest_at(self.source, opts)
        self._check_expectations(expect_domain, expect_split, expect_config, expect_config_hash)
        self.shards = self.manifest["shards"]
        self._firsts = [int(s["first"]) for s in self.shards]
        self._check_shards(opts)
        self.vlp_transform = transform or shard_sample_to_torch
        self.verify = verify
        super().__init__(
            self.source,
            cache_dir=cache_dir,
            shuffle=train,
            drop_last=train,
            seed=seed,
            storage_options=opts,
            max_cache_size=max_cache_size,
        )

    @property
    def config(self) -> dict[str, Any]:
        """The stored preprocessing config."""
        return dict(self.manifest["config"])

    @property
    def extra(self) -> dict[str, Any]:
        """The writer's extra facts (class names, rates, ...)."""
        return dict(self.manifest.get("extra", {}))

    def _check_expectations(
        self, domain: str | None, split: str | None, config: Mapping[str, Any] | None, chash: str | None
    ) -> None:
        m, where = self.manifest, f"{self.source}/{MANIFEST_NAME}"
        if domain is not None and m["domain"] != domain:
            raise ShardConfigError(f"{where}: shards are for domain {m['domain']!r}, not {domain!r}")
        if split is not None and m["split"] != split:
            raise ShardConfigError(f"{where}: shards are split {m['split']!r}, not {split!r}")
        if chash is not None and m["config_hash"] != chash:
            raise ShardConfigError(
                f"{where}: shards were made with another preprocessing config (hash {m['config_hash']}, expected "
                f"{chash}); stored config {m['config']}; re-run prepare with this run's config"
            )
        if config:
            stored = m["config"]
            bad = {k: (stored.get(k, "<absent>"), v) for k, v in _jsonable(dict(config)).items() if stored.get(k) != v}
            if bad:
                diff = "; ".join(f"{k}: shards {s!r}, this run {e!r}" for k, (s, e) in sorted(bad.items()))
                raise ShardConfigError(
                    f"{where}: shards were made with another preprocessing config (hash {m['config_hash']}): {diff}; "
                    "re-run prepare with this run's config or change the run to match"
                )

    def _range(self, i: int) -> str:
        s = self.shards[i]
        return f"shard {s['file']} (samples {s['first']}-{s['first'] + s['n'] - 1} of {self.manifest['n_samples']})"

    def _check_shards(self, storage_options: Mapping[str, Any]) -> None:
        sizes = _shard_sizes(self.source, [s["file"] for s in self.shards], storage_options)
        for i, s in enumerate(self.shards):
            got = sizes.get(s["file"])
            if got is None:
                raise ShardError(f"{self.source}: {self._range(i)} is missing")
            if got != s["bytes"]:
                raise ShardError(f"{self.source}: {self._range(i)} is corrupt: {got} bytes, expected {s['bytes']}")

    def _shard_of(self, index: int) -> int:
        return max(0, bisect_right(self._firsts, index) - 1)

    def __getitem__(self, index: Any) -> Any:
        g = int(getattr(index, "index", index))
        try:
            record = super().__getitem__(index)
        except (OSError, ValueError, RuntimeError, KeyError, EOFError) as exc:
            raise ShardError(f"{self.source}: {self._range(self._shard_of(g))} cannot be read: {exc}") from exc
        try:
            meta = json.loads(record[_META])
            arrays = {k: v for k, v in record.items() if k not in (_ID, _META, _CRC)}
            if self.verify and int(record[_CRC]) != _crc(record[_ID], record[_META], arrays):
                raise ValueError("checksum mismatch")
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardError(
                f"{self.source}: {self._range(self._shard_of(g))} is corrupt at sample {g}: {exc}"
            ) from exc
        sample = {_ID: record[_ID], **meta, **arrays}
        return self.vlp_transform(sample, g, int(self.current_epoch))


class ShardLoader(litdata.StreamingDataLoader):
    """``litdata.StreamingDataLoader`` whose checkpointed position counts the batches *trained on*.

    Lightning fetches one batch ahead of the step it runs, so the loader's own count is one batch ahead when a
    checkpoint is saved; resuming from it would skip that batch. With ``progress`` set (a callable returning the
    batches whose step has run in this epoch; :class:`~vlp_core.training.PairedDataModule` sets it) the saved
    state rewinds to them. Without it (plain loops) the loader's own count is exact.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress: Callable[[], int] | None = None

    def state_dict(self) -> dict[str, Any]:
        if self.progress is None or self._num_samples_yielded_streaming == 0:
            return super().state_dict()
        done = int(self.progress())
        assert self.batch_size
        saved = (self._num_samples_yielded_streaming, self._latest_worker_idx)
        try:
            self._num_samples_yielded_streaming = done * int(self.batch_size)
            # the worker that produced the last batch trained on (workers hand out batches in turn)
            self._latest_worker_idx = (done - 1) % max(1, self.num_workers)
            return super().state_dict()
        finally:
            self._num_samples_yielded_streaming, self._latest_worker_idx = saved
