// Valid manifests, one per kind of reshape, that the fuzz tests mutate: each validates and plans
// as it is (manifest-fuzz.test.ts checks that).

/** Valid manifests the mutations start from; each is checked to validate and plan as is. */
export const SEEDS: Readonly<Record<string, string>> = {
  'copies-to-overlays': `# yaml-language-server: $schema=../schemas/manifest.schema.json
version: 1
images:
  tpl:
    path: out/tpl.qcow2
    from: { path: in/tpl.raw, format: raw }
  web:
    path: out/web.qcow2
    from:
      path: in/web.raw
      format: raw
    backing: tpl
`,
  'convert-keeping-backing': `version: 1
images:
  vm:
    path: out/vm.qcow2
    format: qcow2
    from: { path: vm.qcow2, format: qcow2 }
    backing: { path: base.qcow2, format: qcow2 }
`,
  'snapshot-source': `version: 1
defaults:
  format: qcow2
images:
  sn0:
    path: out/sn0.qcow2
    from: { path: snap.qcow2, format: qcow2, snapshot: sn0 }
  now:
    path: out/now.qcow2
    from: { path: snap.qcow2, format: qcow2 }
    backing: sn0
`,
  'data-file': `version: 1
images:
  tpl:
    path: out/tpl.qcow2
    from: { path: in/tpl.raw, format: raw }
    options: { data_file: out/tpl.data, data_file_raw: true }
  web:
    path: out/web.qcow2
    from: { path: in/web.raw, format: raw }
    backing: tpl
    options:
      data_file: out/web.data
`,
  options: `version: 1
defaults:
  format: qcow2
  options: { cluster_size: 65536, compat: "1.1" }
images:
  base:
    path: base.qcow2
  inplace:
    path: inplace.qcow2
    backing: null
    options:
      lazy_refcounts: true
      refcount_bits: 16
    size: 8M
  wide:
    path: out/wide.qcow2
    from: { path: in/tpl.raw, format: raw }
    options: { cluster_size: 131072, extended_l2: true, compression_type: zstd, preallocation: metadata }
    size: 4194304
  flat:
    path: out/flat.vmdk
    format: vmdk
    from: { path: in/web.raw, format: raw }
    options: { subformat: monolithicSparse }
    shrink: false
`,
};
