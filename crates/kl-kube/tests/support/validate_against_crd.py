"""Validates custom resources against a CRD's own openAPIV3Schema with Python jsonschema.

Usage: validate_against_crd.py CRD_FILE OBJECT_FILE...  (one object per file)

Prints `PASSED path` or `ERROR path: field: message` per file; exits 1 if any file fails,
3 when jsonschema or yaml is missing (the test turns that into SKIPPED or a CI failure).
"""

import sys

try:
    import jsonschema
    import yaml
except ImportError as e:
    print(f"MISSING python module: {e.name} (pip install kubernetes-validate brings both)")
    sys.exit(3)


def main(argv):
    with open(argv[1]) as f:
        crd = yaml.safe_load(f)
    failed = 0
    for path in argv[2:]:
        with open(path) as f:
            obj = yaml.safe_load(f)
        group, _, version = obj["apiVersion"].rpartition("/")
        versions = [v for v in crd["spec"]["versions"] if v["name"] == version]
        if group != crd["spec"]["group"] or obj["kind"] != crd["spec"]["names"]["kind"] or not versions:
            print(f"ERROR {path}: {obj['apiVersion']} {obj['kind']} is not served by this CRD")
            failed += 1
            continue
        schema = versions[0]["schema"]["openAPIV3Schema"]
        errors = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
        ]
        if errors:
            failed += 1
            for e in errors:
                print(f"ERROR {path}: {e}")
        else:
            print(f"PASSED {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
