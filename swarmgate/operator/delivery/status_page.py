"""The read-only status page at `/`: a `/v1/status` document as one HTML page (pure; the template is
read from the package once).

Rendered on the server with jinja2, autoescaped (every value is text, never markup), with no script
at all, so filters and pages are query parameters (`?host=&service=&page=`) and work in any browser.
The page shows what `status_view.build_view` takes from the document, and nothing else.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2

from swarmgate.operator.delivery.status_view import build_view, parse_query, when

TEMPLATES = Path(__file__).parent / "templates"


@functools.cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    return env.get_template("status.html.j2")


def render_status_page(document: Mapping[str, Any], params: Mapping[str, str], *,
                       dashboard_url: str | None = None) -> str:
    """The page for `document` (a `/v1/status` document) and the request's query parameters."""
    return _template().render(build_view(document, parse_query(params), dashboard_url=dashboard_url))
