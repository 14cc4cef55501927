"""docs/PITCH_DECK.md: 12-15 slides, and every figure's link points at a section of
docs/PERFORMANCE.md that exists and names a bench command."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_pitch_deck_slides_and_links():
    deck = (DOCS / "PITCH_DECK.md").read_text()
    slides = [s for s in re.split(r"^---$", deck, flags=re.M)[1:] if s.strip()]
    assert 12 <= len(slides) <= 15
    anchors = {_slug(h) for h in re.findall(r"^#+ (.*)$", (DOCS / "PERFORMANCE.md").read_text(), re.M)}
    links = re.findall(r"\[([^\]]*)\]\(PERFORMANCE\.md#([^)]+)\)", deck)
    assert links
    for _text, anchor in links:
        assert anchor in anchors, anchor
    measured = [s for s in slides if "Measured" in s.strip().splitlines()[0]]
    assert len(measured) >= 3
    for slide in measured:
        assert re.search(r"\[`python -m bench[^`]*`\]\(PERFORMANCE\.md#", slide), slide
