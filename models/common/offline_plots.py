"""Write a `dvc plots` HTML template whose chart scripts are inlined, so pages draw offline.

dvc-render's default page loads vega, vega-lite and vega-embed from a CDN. `make install`
fetches the same versions from the npm registry and calls this module, which inlines them
into `.dvc/plots/offline.html`; `.dvc/config` points `plots.html_template` at that file.

Run: python -m models.common.offline_plots .venv/vega/node_modules .dvc/plots/offline.html
"""

import sys
from pathlib import Path

SCRIPTS = (
    "vega/build/vega.min.js",
    "vega-lite/build/vega-lite.min.js",
    "vega-embed/build/vega-embed.min.js",
)

ESCAPED_END = "<\\/script"  # a literal "</script" inside inlined JS would end the tag
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>reprovision plots</title>
    %s
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def render(node_modules: Path) -> str:
    """Return the template text with every chart script inlined.

    Args:
        node_modules: folder holding the npm packages vega, vega-lite and vega-embed.

    Returns:
        HTML with dvc-render's `{plot_divs}` and `{refresh_tag}` placeholders and no
        `{scripts}` placeholder, so no CDN tag is ever added.
    """
    tags = []
    for rel in SCRIPTS:
        js = (node_modules / rel).read_text(encoding="utf-8").replace("</script", ESCAPED_END)
        tags.append(f'<script type="text/javascript">{js}</script>')
    return PAGE % "\n    ".join(tags)


def main() -> None:
    node_modules, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(render(node_modules), encoding="utf-8")
    tmp.replace(out)


if __name__ == "__main__":
    main()
