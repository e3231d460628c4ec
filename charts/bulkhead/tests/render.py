"""Renders the chart with Helm's own library and prints the objects as one JSON List.

    python render.py RELEASE NAMESPACE [KEY=VALUE ...] [--kinds Kind,Kind]

KEY is a dotted values path (`webhook.secretName=x`); `true`, `false` and integers are typed. The
end-to-end harness uses it to give Bulkhead exactly the RBAC the chart gives it.
"""

import json
import pathlib
import sys

import helm_python as helm
import yaml

CHART = pathlib.Path(__file__).resolve().parent.parent


def typed(value):
    if value in ("true", "false"):
        return value == "true"
    if value[:1] in ("[", "{"):
        return json.loads(value)
    try:
        return int(value)
    except ValueError:
        return value


def values_from(pairs):
    values = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = values
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = typed(value)
    return values


def main(argv):
    kinds = None
    if "--kinds" in argv:
        i = argv.index("--kinds")
        kinds = set(argv[i + 1].split(","))
        argv = argv[:i] + argv[i + 2:]
    release, namespace, *pairs = argv
    chart = helm.Chart.load(CHART)
    manifests = chart.render(values_from(pairs), name=release, namespace=namespace, is_install=True)
    items = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc and (kinds is None or doc["kind"] in kinds):
                items.append(doc)
    json.dump({"apiVersion": "v1", "kind": "List", "items": items}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
