"""The README and the pages under docs/: every relative link resolves, and the README stays short."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 15 * 1024

# Markdown links and images, `[text](target)` and `![alt](target)`, with an optional "title"; HTML src/href.
MARKDOWN_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
EXTERNAL = ("http://", "https://", "mailto:")


def links(text: str) -> list[str]:
    """Every link target in a Markdown file, leaving out code blocks and code spans (they show text, not links)."""
    prose = CODE_SPAN.sub("", FENCE.sub("", text))
    return MARKDOWN_LINK.findall(prose) + HTML_LINK.findall(prose)


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in links(page.read_text(encoding="utf-8")):
        if target.startswith(EXTERNAL) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    return broken


@pytest.mark.parametrize("page", PAGES, ids=[str(page.relative_to(ROOT)) for page in PAGES])
def test_relative_links_resolve(page):
    broken = broken_links(page)
    assert not broken, f"{page.relative_to(ROOT)} links to files that do not exist (relative to it): {broken}"


def test_link_finder_sees_markdown_and_html_links():
    text = '![a](x.png) [b](y.md#part "title") <img src="z.png"> `[not](code.md)`\n```\n[nor](this.md)\n```\n'
    assert links(text) == ["x.png", "y.md#part", "z.png"]


def test_readme_fits_in_15_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes, over {README_LIMIT} (15 KB): move detail into a page under docs/ and link it "
        "from the README's table of pages."
    )
