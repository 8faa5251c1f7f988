"""YAML for files people apply with other tools (kubectl, GitHub Actions), written the way
yamllint's default rules and kubectl write it. models/sweep_emit.py (scheduler jobs) and
models/common/standard_servers.py (KServe manifests) both write through `dump`; their tests run
`yamllint --strict` on the output."""

import yaml


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as yamllint's default style and kubectl write them."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def dump(document: dict) -> str:
    """`document` as block YAML, keys in insertion order, no line wrapping."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, width=1000)
