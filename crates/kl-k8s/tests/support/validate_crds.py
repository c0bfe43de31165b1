"""Strict validation of custom resources (Knative kinds, LambdaFunction) against JSON schemas.

Usage: validate_crds.py SCHEMAS FILE...  (one object per file)

SCHEMAS is one of:
- a directory of CRD schemas in the datreeio/CRDs-catalog layout (GROUP/KIND_VERSION.json), such
  as shared/schemas/crds. They cover `spec` and `status` and reject unknown fields; they leave the
  envelope open, so it is checked here: only apiVersion, kind, metadata and spec at the top, only
  name, namespace, labels and annotations (string maps) in metadata, and DNS-1123 names.
- a CustomResourceDefinition file (YAML): objects of its group and kind are checked against the
  openAPIV3Schema of their version, as the CRD serves them; metadata is left to the API server.

Prints one line per file; exits 1 if any file fails, 2 on a usage problem, 3 when jsonschema or
yaml is missing.
"""

import functools
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


def catalog_schema(schema_dir, obj):
    """The catalog's schema for `obj` and a name for it, or None and why there is none."""
    group, _, version = obj["apiVersion"].rpartition("/")
    schema_path = os.path.join(schema_dir, group, f"{obj['kind'].lower()}_{version}.json")
    if not os.path.exists(schema_path):
        return None, f"no schema {schema_path} for {obj['apiVersion']} {obj['kind']}"
    with open(schema_path) as f:
        return json.load(f), os.path.relpath(schema_path, schema_dir)


def crd_schema(crd, obj):
    """The CRD's schema for `obj`'s version and a name for it, or None and why there is none."""
    group, _, version = obj["apiVersion"].rpartition("/")
    versions = [v for v in crd["spec"]["versions"] if v["name"] == version]
    if group != crd["spec"]["group"] or obj["kind"] != crd["spec"]["names"]["kind"] or not versions:
        return None, f"{obj['apiVersion']} {obj['kind']} is not served by this CRD"
    return versions[0]["schema"]["openAPIV3Schema"], f"{crd['metadata']['name']} {version}"


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    source, files = argv[1], argv[2:]
    if os.path.isdir(source):
        schema_for, check_envelope = functools.partial(catalog_schema, source), True
    else:
        with open(source) as f:
            crd = yaml.safe_load(f)
        schema_for, check_envelope = functools.partial(crd_schema, crd), False
    failed = 0
    for path in files:
        try:
            with open(path) as f:
                obj = yaml.safe_load(f)
        except yaml.YAMLError as e:
            print(f"ERROR {path}: not plain YAML: {e}")
            failed += 1
            continue
        schema, against = schema_for(obj)
        if schema is None:
            print(f"ERROR {path}: {against}")
            failed += 1
            continue
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in cls(schema).iter_errors(obj)
        ]
        if check_envelope:
            errors += envelope_errors(obj)
        if errors:
            failed += 1
            name = (obj.get("metadata") or {}).get("name")
            for e in errors:
                print(f"ERROR {path} ({obj['kind']} {name}): {e}")
        else:
            print(f"PASSED {path} against {against}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
