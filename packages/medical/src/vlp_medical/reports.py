"""Radiology report handling shared by every indexer: section extraction, cleaning, sentence splitting."""

from __future__ import annotations

import re

from vlp_core.data import BadInputError

__all__ = ["MissingSectionError", "clean_report", "extract_sections", "report_text", "split_sentences"]

# Section headers as written in MIMIC-CXR / OpenI reports ("FINDINGS:", "IMPRESSION:", "Impression -").
_HEADER = re.compile(
    r"(?im)^[ \t]*(FINDINGS?|IMPRESSIONS?|CONCLUSIONS?|INDICATION|HISTORY|COMPARISON|TECHNIQUE|EXAMINATION|"
    r"CLINICAL (?:HISTORY|INFORMATION)|REASON FOR (?:EXAM(?:INATION)?|STUDY)|NOTIFICATION|RECOMMENDATIONS?|WET READ|"
    r"FINAL REPORT)[ \t]*[:\-]"
)
_CANON = {"finding": "findings", "findings": "findings", "impression": "impression", "impressions": "impression",
          "conclusion": "impression", "conclusions": "impression"}  # fmt: skip


class MissingSectionError(BadInputError):
    """A report has none of the requested sections."""


def extract_sections(text: str) -> dict[str, str]:
    """Split a report at its upper/title-case section headers.

    Returns:
        ``{section name (lower case, "findings"/"impression" canonicalised): cleaned text}``; the text before
        the first header is under ``"preamble"``. Empty sections are dropped.
    """
    out: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    if not matches:
        body = clean_report(text)
        return {"preamble": body} if body else {}
    pre = clean_report(text[: matches[0].start()])
    if pre:
        out["preamble"] = pre
    for m, nxt in zip(matches, [*matches[1:], None]):
        name = m.group(1).lower()
        name = _CANON.get(name, name)
        body = clean_report(text[m.end() : nxt.start() if nxt else len(text)])
        if body:
            out[name] = f"{out[name]} {body}" if name in out else body
    return out


def clean_report(text: str) -> str:
    """Collapse whitespace and line breaks, drop de-identification placeholders (``___``) and stray bullets."""
    text = re.sub(r"_{2,}", " ", text)
    text = re.sub(r"(?m)^\s*(?:\d+\.|[-*\u2022])\s+", " ", text)
    text = re.sub(r"\s+", " ", text)
    return text.strip()


def report_text(text: str, sections: tuple[str, ...] = ("findings", "impression"), source: str = "report") -> str:
    """The training text of a report: the requested sections joined in order.

    Raises:
        MissingSectionError: none of ``sections`` is present (names ``source`` and what was found).
    """
    found = extract_sections(text)
    parts = [f"{name.upper()}: {found[name]}" for name in sections if name in found]
    if not parts:
        raise MissingSectionError(
            f"{source}: no {'/'.join(s.upper() for s in sections)} section (found {sorted(found) or 'nothing'})"
        )
    return " ".join(parts)


_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Za-z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split a report into sentences (section labels removed, numbered list items split, empty pieces dropped)."""
    text = re.sub(r"\b(?:FINDINGS|IMPRESSION)\s*:\s*", " ", text)
    pieces = [p.strip(" .;") for p in _SENT.split(clean_report(text))]
    return [p for p in pieces if len(p) > 1]
