#!/usr/bin/env bash
# Runs the demo: makes a 256 MiB raw template and two full copies with their own changes,
# applies manifest.yaml, then checks every overlay with qemu-img compare and check.
# DEMO_DIR sets where it works (default: work/ beside this script; it is recreated).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
chainform="$here/../../bin/chainform"
work="${DEMO_DIR:-$here/work}"

rm -rf "$work"
mkdir -p "$work/in"
# The copy keeps its editor schema hint working from wherever DEMO_DIR puts it (an absolute path).
schema="$(cd "$here/../.." && pwd)/schemas/manifest.schema.json"
sed "1s#\$schema=.*#\$schema=$schema#" "$here/manifest.yaml" >"$work/manifest.yaml"
cd "$work"

echo "== making input images in $work/in"
qemu-img create -q -f raw in/template.raw 256M
qemu-io -f raw -c 'write -P 0x5a 0 160M' in/template.raw >/dev/null
cp --sparse=always in/template.raw in/web.raw
cp --sparse=always in/template.raw in/db.raw
qemu-io -f raw -c 'write -P 0x77 16M 4M' -c 'write -P 0x78 200M 2M' in/web.raw >/dev/null
qemu-io -f raw -c 'write -z 32M 8M' -c 'write -P 0x99 64M 3M' in/db.raw >/dev/null
sha256sum in/*.raw > inputs.sha256

echo "== chainform plan"
"$chainform" plan manifest.yaml
echo
echo "== chainform apply"
"$chainform" apply manifest.yaml --yes --jobs 2
echo
echo "== checking the result"
for vm in web db; do
  qemu-img compare -q -f qcow2 -F raw "out/$vm.qcow2" "in/$vm.raw"
  qemu-img check -q -f qcow2 "out/$vm.qcow2"
  echo "out/$vm.qcow2: identical to in/$vm.raw, stores $(du -h "out/$vm.qcow2" | cut -f1) on top of out/template.qcow2"
done
sha256sum --quiet -c inputs.sha256 && echo "inputs unchanged (sha256)"
echo
echo "== a second plan has nothing to do"
"$chainform" plan manifest.yaml --detailed-exitcode
