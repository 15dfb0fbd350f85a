// Validates the Prometheus Operator's objects (ServiceMonitor, PrometheusRule, ...)
// of a rendered overlay, for scripts/deploy-check (run by it, never on its own):
//
//   node scripts/lib/deploy-check-crds.mjs OBJECTS.json OUT_DIR
//
// OBJECTS.json is the JSON array of the overlay's monitoring.coreos.com objects
// (written by scripts/lib/deploy_check.py). The models come from npm's
// @kubernetes-models/prometheus-operator (package.json pins it; it is generated
// from the operator's Go API types, v0.91.0 for 6.0.0), in two passes:
//
//  1. the package's compiled JSON-schema validator (`.validate()`): types,
//     required fields, enums and patterns. It does not reject a field it does
//     not know (its schemas leave additionalProperties open), so
//  2. each object is written out as a TypeScript object literal typed with the
//     package's interface for its kind (IServiceMonitor, ...), and `tsc --noEmit`
//     (npm's typescript) checks it: TypeScript rejects, at any depth, a property
//     an object literal's type does not declare (excess property check). That
//     is what makes a misspelt field an error here, where the API server would
//     silently drop it. Where a type is open by design (labels, annotations:
//     string maps), any key passes, as it would in a cluster.
//
// Before the real objects, broken copies of them are checked (a misspelt field
// and a wrong type in each ServiceMonitor and PrometheusRule): each must be
// rejected by the pass named, or this exits 1, since a check that passes them
// could not catch the same mistakes in the manifests. Prints one line per
// finding; exits 1 if any. Writes OUT_DIR/prometheus-operator.mts (the typed
// literals) for a reader of tsc's messages.

import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const PACKAGE = "@kubernetes-models/prometheus-operator";

// The broken copies: a path in the object, what is done there, and the pass
// that must reject it ("types": tsc's excess property check; "schema": the
// package's validator). Each path exists in this project's objects; a missing
// one is reported, so this list cannot silently check nothing.
const FAULTS = {
  ServiceMonitor: [
    { what: "misspelt field spec.endpoints[0].intervall", at: ["spec", "endpoints", 0], key: "intervall", copyOf: "interval", by: "types" },
    { what: "wrong type: spec.endpoints[0].interval as a number", at: ["spec", "endpoints", 0], key: "interval", value: 15, by: "schema" },
  ],
  PrometheusRule: [
    { what: "misspelt field spec.groups[0].rules[0].annotation", at: ["spec", "groups", 0, "rules", 0], key: "annotation", copyOf: "annotations", by: "types" },
    { what: "wrong type: spec.groups[0].rules[0].for as a number", at: ["spec", "groups", 0, "rules", 0], key: "for", value: 300, by: "schema" },
  ],
};

function label(obj) {
  return `${obj?.kind ?? "?"} ${obj?.metadata?.name ?? "?"}`;
}

function dotted(p) {
  return p.length === 0 ? "(root)" : p.join(".");
}

// The model class and TypeScript interface of OBJ, from the package's export
// for its group, version and kind (monitoring.coreos.com/v1/ServiceMonitor).
async function modelOf(obj) {
  const [group, version] = String(obj.apiVersion ?? "").split("/");
  const specifier = `${PACKAGE}/${group}/${version}/${obj.kind}`;
  try {
    const module = await import(specifier);
    const model = module[obj.kind];
    if (typeof model !== "function") return { error: `${specifier} exports no ${obj.kind}` };
    return { model, specifier, iface: `I${obj.kind}` };
  } catch (e) {
    return { error: `${PACKAGE} has no model for ${obj.apiVersion} ${obj.kind} (${e.code ?? e.message})` };
  }
}

// Pass 1: the compiled schema validator. Returns its messages.
function schemaErrors(model, obj) {
  try {
    new model(structuredClone(obj)).validate();
    return [];
  } catch (e) {
    return [...new Set(String(e.message).split(/,\s*(?=data\/)/).map((m) => m.trim()))];
  }
}

// An object literal, one property or element a line, each line tagged with the
// path of the value it holds, so that tsc's line numbers map back to a field.
function literal(value, at, depth, prefix, suffix, lines) {
  const pad = "  ".repeat(depth);
  if (value !== null && typeof value === "object") {
    const array = Array.isArray(value);
    const entries = array ? value.map((v, i) => [i, v]) : Object.entries(value);
    const [open, close] = array ? ["[", "]"] : ["{", "}"];
    if (entries.length === 0) {
      lines.push({ text: `${pad}${prefix}${open}${close}${suffix}`, at });
      return;
    }
    lines.push({ text: `${pad}${prefix}${open}`, at });
    entries.forEach(([k, v], n) =>
      literal(v, [...at, k], depth + 1, array ? "" : `${JSON.stringify(k)}: `, n < entries.length - 1 ? "," : "", lines),
    );
    lines.push({ text: `${pad}${close}${suffix}`, at });
  } else {
    lines.push({ text: `${pad}${prefix}${JSON.stringify(value)}${suffix}`, at });
  }
}

// Pass 2: tsc on every case at once. Returns, per case, its messages.
function typeErrors(cases, outDir, root) {
  const lines = [{ text: "// Generated by scripts/lib/deploy-check-crds.mjs: each object typed with its model's interface." }];
  const imports = new Map();
  for (const c of cases) imports.set(`${c.specifier}|${c.iface}`, c);
  for (const c of imports.values()) lines.push({ text: `import type { ${c.iface} } from ${JSON.stringify(c.specifier)};` });
  cases.forEach((c, i) => {
    const start = lines.length;
    literal(c.obj, [], 0, `export const case${i}: ${c.iface} = `, ";", lines);
    for (let n = start; n < lines.length; n++) lines[n].case = i;
  });
  const file = path.join(outDir, "prometheus-operator.mts");
  writeFileSync(file, lines.map((l) => l.text).join("\n") + "\n");

  const require = createRequire(path.join(root, "package.json"));
  const tsc = path.join(path.dirname(require.resolve("typescript/package.json")), "bin", "tsc");
  const run = spawnSync(
    process.execPath,
    [tsc, "--noEmit", "--strict", "--pretty", "false", "--module", "nodenext", "--moduleResolution", "nodenext",
      "--target", "es2022", "--skipLibCheck", "--types", "", file],
    { cwd: root, encoding: "utf8" },
  );
  const output = `${run.stdout ?? ""}${run.stderr ?? ""}`;
  const found = cases.map(() => []);
  const general = [];
  let last = null;
  for (const raw of output.split("\n")) {
    const m = raw.match(/\((\d+),(\d+)\): error (TS\d+): (.*)$/);
    if (m) {
      const line = lines[Number(m[1]) - 1];
      last = { text: `${dotted(line?.at ?? [])}: ${m[4]} (${m[3]})` };
      if (line?.case === undefined) general.push(last);
      else found[line.case].push(last);
    } else if (last && /^\s+\S/.test(raw)) {
      last.text += ` ${raw.trim()}`;
    }
  }
  if (run.status !== 0 && found.every((f) => f.length === 0)) {
    general.push({ text: `tsc failed without a message on an object (exit ${run.status ?? run.signal}): ${output.trim() || run.error}` });
  }
  return { found: found.map((f) => f.map((e) => e.text)), general: general.map((e) => e.text), file };
}

// The broken copies of OBJ, from FAULTS.
function faultsOf(obj, problems) {
  const copies = [];
  for (const fault of FAULTS[obj.kind] ?? []) {
    const copy = structuredClone(obj);
    let node = copy;
    for (const step of fault.at) node = node?.[step];
    if (node === null || typeof node !== "object" || (fault.copyOf && !(fault.copyOf in node))) {
      problems.push(`${label(obj)}: the fault "${fault.what}" has nowhere to go (no ${dotted(fault.at)}${fault.copyOf ? `.${fault.copyOf}` : ""})`);
      continue;
    }
    node[fault.key] = fault.copyOf ? node[fault.copyOf] : fault.value;
    copies.push({ fault, obj: copy });
  }
  return copies;
}

async function main(argv) {
  if (argv.length !== 2) {
    console.error("usage: node scripts/lib/deploy-check-crds.mjs OBJECTS.json OUT_DIR");
    return 2;
  }
  const [objectsPath, outDir] = argv;
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
  const objects = JSON.parse(readFileSync(objectsPath, "utf8"));
  const problems = [];
  const cases = [];
  for (const obj of objects) {
    const m = await modelOf(obj);
    if (m.error) {
      problems.push(`${label(obj)}: ${m.error}`);
      continue;
    }
    cases.push({ ...m, obj, real: true });
    for (const { fault, obj: copy } of faultsOf(obj, problems)) cases.push({ ...m, obj: copy, fault });
  }
  if (!objects.some((o) => o.kind === "ServiceMonitor") || !objects.some((o) => o.kind === "PrometheusRule")) {
    problems.push("expected a ServiceMonitor and a PrometheusRule among the rendered objects");
  }
  for (const c of cases) c.schema = schemaErrors(c.model, c.obj);
  const types = typeErrors(cases, outDir, root);
  problems.push(...types.general);
  cases.forEach((c, i) => {
    c.types = types.found[i];
  });

  const version = JSON.parse(readFileSync(path.join(root, "node_modules", ...PACKAGE.split("/"), "package.json"), "utf8")).version;
  for (const c of cases) {
    if (c.real) {
      for (const e of c.schema) problems.push(`${label(c.obj)}: ${e} (${PACKAGE}'s schema)`);
      for (const e of c.types) problems.push(`${label(c.obj)}: ${e} (its TypeScript interface ${c.iface})`);
      if (c.schema.length === 0 && c.types.length === 0) {
        console.log(`ok  ${label(c.obj)} valid against ${PACKAGE} ${version}'s schema and ${c.iface} (no unknown field)`);
      }
    } else {
      const caught = c.fault.by === "types" ? c.types : c.schema;
      if (caught.length === 0) {
        problems.push(`${label(c.obj)}: a copy with a ${c.fault.what} passed the ${c.fault.by === "types" ? "TypeScript" : "schema"} check: it cannot catch that mistake`);
      } else {
        console.log(`ok  a copy of ${label(c.obj)} with a ${c.fault.what} is rejected: ${caught[0]}`);
      }
    }
  }
  for (const p of problems) console.log(`FAIL ${p}`);
  return problems.length > 0 ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
