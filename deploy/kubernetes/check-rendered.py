"""Validates the objects of a rendered overlay (`kubectl kustomize`, YAML on stdin) and prints them
as one JSON list for deploy_files.rs's own checks.

Kubernetes' own kinds are checked by kubernetes-validate in strict mode (unknown fields are errors)
against the API version given as the first argument; the operators' kinds against the
openAPIV3Schema of their CRDs in schemas/, made just as strict. A kind with no schema is an error.
Run with the venv of deploy/local/ensure-kubernetes-validate.sh.
"""

import copy
import json
import pathlib
import sys

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = pathlib.Path(__file__).resolve().parent / "schemas"


def strict(schema):
    """The schema with unknown fields refused wherever the CRD lists an object's fields, as the
    API server's strict field validation does (by default it would only drop them)."""
    schema = copy.deepcopy(schema)

    def close(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                close(value)
        elif isinstance(node, list):
            for value in node:
                close(value)

    close(schema)
    return schema


def crd_schemas():
    """(apiVersion, kind) -> the strict openAPIV3Schema of every CRD version served in schemas/."""
    found = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = version["schema"]["openAPIV3Schema"]
                    found[(f"{group}/{version['name']}", kind)] = strict(schema)
    return found


def main():
    kubernetes_version = sys.argv[1]
    custom = crd_schemas()
    objects = [doc for doc in yaml.safe_load_all(sys.stdin) if doc]
    failures = []
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        name = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        if key in custom:
            validator = jsonschema.Draft7Validator(custom[key])
            for error in validator.iter_errors(obj):
                where = "/".join(str(part) for part in error.absolute_path) or "(top)"
                failures.append(f"{name}: {where}: {error.message} (CRD schema in {SCHEMAS.name}/)")
            continue
        try:
            kubernetes_validate.validate(obj, kubernetes_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(
                f"{name}: no schema for {key[0]} {key[1]}: neither Kubernetes {kubernetes_version} "
                f"nor a CRD in {SCHEMAS.name}/ has it"
            )
        except kubernetes_validate.ValidationError as error:
            where = "/".join(str(part) for part in error.path) or "(top)"
            failures.append(f"{name}: {where}: {error.message} (Kubernetes {kubernetes_version})")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    if not objects:
        print("no objects on stdin", file=sys.stderr)
        sys.exit(1)
    json.dump(objects, sys.stdout)


if __name__ == "__main__":
    main()
