"""Patient-level, hash-based deterministic splits.

Each patient is assigned to a split by hashing ``(seed, patient id)`` to a number in [0, 1) and comparing it with
the cumulative split fractions. Consequences (all intended):

* every record of a patient lands in the same split (the assignment depends on the id only);
* the assignment does not depend on row order or on which other patients exist, so adding new patients never
  moves an existing one (unlike shuffling a list and cutting it);
* split sizes match the fractions only in expectation (binomial noise, ~``sqrt(n f (1-f))`` patients).

Ids are hashed through ``str(id)``, so ``17`` and ``"17"`` are the same patient.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence

from vlp_core.data.errors import BadInputError

__all__ = ["patient_split", "patient_split_labels", "split_of", "DEFAULT_SPLIT_NAMES"]

DEFAULT_SPLIT_NAMES = ("train", "val", "test")


def _normalise_fractions(
    fractions: Sequence[float] | Mapping[str, float], names: Sequence[str] | None
) -> list[tuple[str, float]]:
    if isinstance(fractions, Mapping):
        if names is not None:
            raise ValueError("give split names either as the keys of `fractions` or as `names`, not both")
        pairs = [(str(k), float(v)) for k, v in fractions.items()]
    else:
        names = tuple(names) if names is not None else DEFAULT_SPLIT_NAMES[: len(fractions)]
        if len(names) != len(fractions):
            raise ValueError(f"{len(fractions)} fractions but {len(names)} split names {tuple(names)}")
        pairs = [(str(n), float(f)) for n, f in zip(names, fractions)]
    if not pairs:
        raise ValueError("at least one split is needed")
    if len({n for n, _ in pairs}) != len(pairs):
        raise ValueError(f"duplicate split names: {[n for n, _ in pairs]}")
    if any(f < 0 for _, f in pairs):
        raise ValueError(f"split fractions must be non-negative, got {dict(pairs)}")
    total = sum(f for _, f in pairs)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {total:g} ({dict(pairs)})")
    return pairs


def _unit_hash(patient_id: Hashable, seed: int) -> float:
    if patient_id is None or (isinstance(patient_id, float) and patient_id != patient_id):
        raise BadInputError("patient id is missing (None/NaN); every record needs a patient id to be split")
    digest = hashlib.blake2b(f"{seed}\x1f{patient_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(
    patient_id: Hashable,
    fractions: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> str:
    """Split name of one patient.

    Args:
        patient_id: Any id; hashed as ``str(patient_id)``.
        fractions: Split fractions (summing to 1) in the order of ``names``, or a ``{name: fraction}`` mapping.
        seed: Changes the whole assignment.
        names: Split names for a sequence of fractions (default ``("train", "val", "test")``).

    Returns:
        The split name.
    """
    return _assign(_unit_hash(patient_id, seed), _normalise_fractions(fractions, names))


def _assign(u: float, pairs: list[tuple[str, float]]) -> str:
    cum = 0.0
    for name, frac in pairs:
        cum += frac
        if u < cum:
            return name
    # u is < 1 but rounding can leave the cumulative sum a hair below 1: the last non-empty split takes it.
    return next(name for name, frac in reversed(pairs) if frac > 0)


def patient_split_labels(
    ids: Iterable[Hashable],
    fractions: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> list[str]:
    """Split name per record (``ids`` has one patient id per record, repeats allowed).

    Args:
        ids: Patient id of every record, length R.
        fractions: See :func:`split_of`.
        seed: See :func:`split_of`.
        names: See :func:`split_of`.

    Returns:
        List of R split names, aligned with ``ids`` (e.g. ``df["split"] = patient_split_labels(df.patient_id)``).
    """
    pairs = _normalise_fractions(fractions, names)
    cache: dict[str, str] = {}
    out = []
    for pid in ids:
        key = str(pid)
        if key not in cache:
            cache[key] = _assign(_unit_hash(pid, seed), pairs)
        out.append(cache[key])
    return out


def patient_split(
    ids: Iterable[Hashable],
    fractions: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> dict[str, set]:
    """Partition the distinct patient ids into splits.

    Args:
        ids: Patient ids (one per record or one per patient; duplicates are merged).
        fractions: Split fractions (summing to 1), or a ``{name: fraction}`` mapping.
        seed: Changes the whole assignment.
        names: Split names for a sequence of fractions (default ``("train", "val", "test")``).

    Returns:
        ``{split name: set of patient ids}``; every split name is present (possibly empty) and the sets are disjoint.
    """
    pairs = _normalise_fractions(fractions, names)
    out: dict[str, set] = {name: set() for name, _ in pairs}
    seen: dict[str, str] = {}
    for pid in ids:
        key = str(pid)
        if key in seen:
            out[seen[key]].add(pid)
            continue
        seen[key] = _assign(_unit_hash(pid, seed), pairs)
        out[seen[key]].add(pid)
    return out
