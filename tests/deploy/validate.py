"""Validates deploy/ offline: every Kubernetes object against Kubernetes' own schemas
(kubernetes-validate, strict: an unknown field fails), the custom resources against the
schemas their projects publish (vendored in tests/deploy/crds, see SOURCES.md; the pod
template of the KServe resource also against Kubernetes' PodSpec), the objects against each other (selectors, ports, probes, the
arguments `tuili serve` takes), and the Containerfile's shape (multi-stage, non-root).

`python validate.py TUILI_BINARY`; exits non-zero naming every problem.
"""

import gzip
import json
import pathlib
import shlex
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRDS = pathlib.Path(__file__).resolve().parent / "crds"
K8S_VERSION = "1.34.0"
TUILI = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/tuili")
CRD_FILES = [
    "inference.networking.k8s.io_inferencepools.yaml",
    "serving.kserve.io_llminferenceservices.yaml.gz",
]

problems: list[str] = []


def check(ok: bool, what: str) -> None:
    if not ok:
        problems.append(what)


def load_all() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append((str(path.relative_to(ROOT)), doc))
    return out


def structural_to_json_schema(node):
    """A CRD's structural OpenAPI v3 schema as a JSON Schema. The API server's strict field
    validation rejects a field the schema does not declare unless the node preserves unknown
    fields; `additionalProperties: false` says the same to jsonschema. `int-or-string` and
    `nullable` have no JSON Schema keyword of their own."""
    if isinstance(node, list):
        return [structural_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: structural_to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def load_crds() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> JSON Schema, for every served version of the vendored CRDs."""
    schemas = {}
    for name in CRD_FILES:
        raw = (CRDS / name).read_bytes()
        crd = yaml.safe_load(gzip.decompress(raw) if name.endswith(".gz") else raw)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version.get("served"):
                schema = structural_to_json_schema(version["schema"]["openAPIV3Schema"])
                # metadata is checked by the API server itself, not by the CRD's schema.
                schema["properties"]["metadata"] = {"type": "object"}
                schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


CUSTOM = load_crds()


def validate_schema(where: str, obj: dict) -> None:
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key in CUSTOM:
        schema = CUSTOM[key]
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(obj))
        for e in errors:
            path = "/".join(str(p) for p in e.absolute_path)
            problems.append(f"{where}: {key[1]} {path}: {e.message}")
        template = obj.get("spec", {}).get("template")
        if template is not None:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"}, "spec": template}
            k8s(f"{where}: {key[1]} spec.template", pod)
    else:
        k8s(f"{where}: {key[1]}", obj)


def k8s(where: str, obj: dict) -> None:
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path)
        problems.append(f"{where} {path}: {e.message}")
    except kubernetes_validate.SchemaNotFoundError as e:
        problems.append(f"{where}: no schema: {e}")


def serve_args_parse(where: str, args: list[str]) -> None:
    """`tuili serve ARGS --help` parses ARGS as the real binary does, then prints help."""
    r = subprocess.run([TUILI, "serve", *args, "--help"], capture_output=True, text=True)
    check(r.returncode == 0, f"{where}: tuili serve rejects {shlex.join(args)}: {r.stderr.strip()}")


def cross_check(objs: list[tuple[str, dict]]) -> None:
    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for where, o in objs:
        by_kind.setdefault(o["kind"], []).append((where, o))
    ((dwhere, dep),) = by_kind["Deployment"]
    ((swhere, svc),) = by_kind["Service"]
    ((pwhere, pool),) = by_kind["InferencePool"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    check(
        dep["spec"]["selector"]["matchLabels"].items() <= labels.items(),
        f"{dwhere}: the Deployment's selector does not match its pods",
    )
    check(svc["spec"]["selector"].items() <= labels.items(), f"{swhere}: selects no tuili pod")
    check(
        pool["spec"]["selector"]["matchLabels"].items() <= labels.items(),
        f"{pwhere}: the pool selects no tuili pod",
    )
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    check(
        pool["spec"]["targetPorts"][0]["number"] == ports["http"],
        f"{pwhere}: targetPorts is not the container's http port",
    )
    for probe in ("startupProbe", "readinessProbe"):
        check(c[probe]["httpGet"]["path"] == "/health", f"{dwhere}: {probe} is not on /health")
    check(
        dep["spec"]["template"]["spec"]["securityContext"].get("runAsNonRoot") is True,
        f"{dwhere}: pods may run as root",
    )
    serve_args_parse(dwhere, c["args"])
    for kwhere, llmis in by_kind.get("LLMInferenceService", []):
        (main,) = [x for x in llmis["spec"]["template"]["containers"] if x["name"] == "main"]
        serve_args_parse(kwhere, main["args"])
        check(main["readinessProbe"]["httpGet"]["path"] == "/health", f"{kwhere}: readiness")


def containerfile() -> None:
    path = DEPLOY / "Containerfile"
    lines = [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")]
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    check(len(froms) >= 2, "Containerfile: not multi-stage")
    last = lines[len(lines) - 1 - lines[::-1].index(froms[-1]) :]
    users = [l.split()[1] for l in last if l.upper().startswith("USER ")]
    check(
        bool(users) and users[-1].split(":")[0] not in ("root", "0"),
        "Containerfile: the final stage runs as root",
    )
    check(any(l.startswith("COPY --from=build") for l in last), "Containerfile: no binary copied")
    entry = [l for l in last if l.startswith("ENTRYPOINT ")]
    check(
        bool(entry) and json.loads(entry[-1][len("ENTRYPOINT ") :])[1:3] == ["serve", "--host"],
        "Containerfile: the entrypoint is not `tuili serve`",
    )
    cmd = [l for l in last if l.startswith("CMD ")]
    if entry and cmd:
        args = json.loads(entry[-1][len("ENTRYPOINT ") :])[2:] + json.loads(cmd[-1][len("CMD ") :])
        serve_args_parse("Containerfile", args)


def main() -> int:
    objs = load_all()
    for where, o in objs:
        validate_schema(where, o)
    cross_check(objs)
    containerfile()
    for p in problems:
        print("deploy:", p)
    if problems:
        return 1
    print(f"deploy: {len(objs)} objects and the Containerfile validate (Kubernetes {K8S_VERSION} schemas, strict)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
