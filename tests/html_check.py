"""Shared by the report tests: parse a page and fail on a closing tag that does not close the innermost element."""
from __future__ import annotations

import re
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


def assert_self_contained(page: str, inline_script: bool = False) -> "Balance":
    """No external URL, link, import or url(): the page opens offline as it is. No script either, unless
    `inline_script`: then only <script> elements without any attribute (no src: the code is on the page) whose code
    names no URL and opens no connection. Returns its parse."""
    p = parse(page)
    low = page.lower()
    assert "http://" not in low and "https://" not in low
    assert not [a for _, attrs in p.tags for k, a in attrs.items() if k in ("src", "href") and a and "//" in a]
    assert "<link" not in low and "@import" not in low and "url(" not in low  # no external style either
    assert "<iframe" not in low and "<object" not in low and "<embed" not in low
    scripts = [attrs for tag, attrs in p.tags if tag == "script"]
    assert low.count("<script") == len(scripts)
    if not inline_script:
        assert not scripts, "a script on a page that must have none"
        return p
    assert scripts, "no script on the page"
    assert all(attrs == {} for attrs in scripts), f"a script with attributes: {scripts}"
    for code in re.findall(r"<script>(.*?)</script>", page, re.S):
        code = code.lower()
        for word in ("fetch(", "xmlhttprequest", "websocket", "eventsource", "sendbeacon", "import", ".src",
                     "location", "document.write", "storage", "//"):
            assert word not in code, f"the inline script uses {word!r}"
    return p
