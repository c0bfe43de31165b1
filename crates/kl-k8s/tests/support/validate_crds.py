"""Strict validation of rendered Knative objects against the CRD schemas in shared/schemas/crds.

Usage: validate_crds.py SCHEMA_DIR FILE...  (one object per file)

The schemas (datreeio/CRDs-catalog) cover `spec` and `status` and reject unknown fields; they
leave the envelope open, so it is checked here: only apiVersion, kind, metadata and spec at the
top, only name, namespace, labels and annotations (string maps) in metadata, and DNS-1123 names.
Prints one line per file; exits 1 if any file fails, 2 on a usage or environment problem.
"""

import json
import os
import re
import sys

try:
    import jsonschema
    import yaml
except ImportError as e:  # the test turns this into a SKIPPED line or a CI failure
    print(f"MISSING python module: {e.name} (pip install kubernetes-validate brings both)")
    sys.exit(3)

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def envelope_errors(obj):
    errors = []
    extra = set(obj) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        errors.append(f"unexpected top-level fields {sorted(extra)}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return errors + ["metadata is missing"]
    extra = set(meta) - {"name", "namespace", "labels", "annotations"}
    if extra:
        errors.append(f"unexpected metadata fields {sorted(extra)}")
    name = meta.get("name", "")
    if not (isinstance(name, str) and len(name) <= 253 and SUBDOMAIN.match(name)):
        errors.append(f"metadata.name {name!r} is not a DNS-1123 subdomain")
    namespace = meta.get("namespace", "")
    if not (isinstance(namespace, str) and LABEL.match(namespace)):
        errors.append(f"metadata.namespace {namespace!r} is not a DNS-1123 label")
    for field in ("labels", "annotations"):
        values = meta.get(field, {})
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in values.items()
        ):
            errors.append(f"metadata.{field} must map strings to strings")
    return errors


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    schema_dir, files = argv[1], argv[2:]
    failed = 0
    for path in files:
        try:
            with open(path) as f:
                obj = yaml.safe_load(f)
        except yaml.YAMLError as e:
            print(f"ERROR {path}: not plain YAML: {e}")
            failed += 1
            continue
        group, _, version = obj["apiVersion"].rpartition("/")
        schema_path = os.path.join(schema_dir, group, f"{obj['kind'].lower()}_{version}.json")
        if not os.path.exists(schema_path):
            print(f"ERROR {path}: no schema {schema_path} for {obj['apiVersion']} {obj['kind']}")
            failed += 1
            continue
        with open(schema_path) as f:
            schema = json.load(f)
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in cls(schema).iter_errors(obj)
        ]
        errors += envelope_errors(obj)
        if errors:
            failed += 1
            for e in errors:
                print(f"ERROR {path} ({obj['kind']} {obj['metadata'].get('name')}): {e}")
        else:
            print(f"PASSED {path} against {os.path.relpath(schema_path, schema_dir)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
