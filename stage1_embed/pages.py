"""Self-contained HTML pages, for both stages: one Jinja2 environment (autoescaped, so no image
or patient name can inject markup; strict, so a missing value is an error, not a blank) and the
shared page style, ``templates/base.html.j2``. Images are embedded as data URIs: a page opens
offline, from an e-mail attachment."""

from __future__ import annotations

import base64

import jinja2


def page_environment(*packages: str) -> jinja2.Environment:
    """Templates of ``packages`` (searched in order), then stage 1's own (the base page)."""
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [jinja2.PackageLoader(p, "templates") for p in (*packages, "stage1_embed")]
        ),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["data_uri"] = lambda data, kind="image/jpeg": (
        f"data:{kind};base64,{base64.b64encode(data).decode()}"
    )
    return env
