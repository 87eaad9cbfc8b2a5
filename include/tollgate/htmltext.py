"""The plain text of the small HTML messages Tollgate sends (mail bodies, chat posts)."""

from __future__ import annotations

import html
import re


def plain_text(markup: str) -> str:
    """Tags removed; a paragraph, line break or table row ends a line, a table cell ends with a space."""
    text = re.sub(r"<br\s*/?>|</p>|</tr>", "\n", markup)
    text = re.sub(r"</t[dh]>", " ", text)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
