"""Shared by the report tests: parse a page and fail on a closing tag that does not close the innermost element."""
from __future__ import annotations

from html.parser import HTMLParser

VOID = {"meta", "br", "hr", "img", "input", "link"}


class Balance(HTMLParser):
    """Fails on a closing tag that does not close the innermost open element."""

    def __init__(self):
        super().__init__()
        self.stack, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def parse(page: str) -> "Balance":
    p = Balance()
    p.feed(page)
    p.close()
    assert p.stack == [], f"unclosed: {p.stack}"
    return p


def assert_self_contained(page: str) -> "Balance":
    """No script, no external URL, link, import or url(): the page opens offline as it is. Returns its parse."""
    p = parse(page)
    low = page.lower()
    assert "http://" not in low and "https://" not in low and "<script" not in low
    assert not [a for _, attrs in p.tags for k, a in attrs.items() if k in ("src", "href") and a and "//" in a]
    assert "<link" not in low and "@import" not in low and "url(" not in low  # no external style either
    return p
