// Validates the prometheus-operator objects (PodMonitor, PrometheusRule, Prometheus) of a rendered manifest
// against the CRDs' schemas, which kubernetes-validate cannot do (it knows only built-in kinds):
//   1. at run time, with @kubernetes-models' validators generated from the CRDs' OpenAPI
//      schemas: required fields, types, enums and patterns (a `for: 5 minutes` fails);
//   2. at compile time, with the TypeScript compiler over the same models' types: an unknown
//      field fails (an API server prunes it silently: a typo'd `honorLabels` would just vanish).
// Usage: node validate-crds.mjs OBJECTS.json [--self-test]
//   OBJECTS.json: the rendered manifest's documents as one JSON array.
//   The TypeScript it writes goes to gen/ beside this file, where node_modules resolves.
//   --self-test: also checks that a typo'd field, a wrong type and a bad duration each fail.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { PodMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PodMonitor";
import { PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule";
import { Prometheus } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/Prometheus";

const MODELS = {
  PodMonitor: { model: PodMonitor, type: "IPodMonitor", module: "PodMonitor" },
  PrometheusRule: { model: PrometheusRule, type: "IPrometheusRule", module: "PrometheusRule" },
  Prometheus: { model: Prometheus, type: "IPrometheus", module: "Prometheus" },
};
const [objectsPath, flag] = process.argv.slice(2);
if (!objectsPath || (flag && flag !== "--self-test")) {
  console.error("usage: node validate-crds.mjs OBJECTS.json [--self-test]");
  process.exit(2);
}
const work = join(dirname(fileURLToPath(import.meta.url)), "gen");
mkdirSync(work, { recursive: true });
const docs = JSON.parse(readFileSync(objectsPath, "utf8")).filter((d) => d && MODELS[d.kind]);
const name = (d) => `${d.kind}/${d.metadata?.name}`;

// Run-time schema errors, one string per object that fails.
function schemaErrors(objs) {
  const errs = [];
  for (const d of objs) {
    try {
      new MODELS[d.kind].model(d).validate();
    } catch (e) {
      errs.push(`${name(d)}: ${e.message}`);
    }
  }
  return errs;
}

// Compile-time errors (unknown fields, types), one string per diagnostic.
function typeErrors(objs, file) {
  const lines = [];
  for (const m of Object.values(MODELS)) {
    lines.push(
      `import type { ${m.type} } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${m.module}";`,
    );
  }
  // [first line in the file, object] of each object, for the diagnostics.
  const where = [];
  let next = lines.length + 1;
  objs.forEach((d, i) => {
    const text = `export const o${i}: ${MODELS[d.kind].type} = ${JSON.stringify(d, null, 1)};`;
    where.push([next, name(d)]);
    next += text.split("\n").length;
    lines.push(text);
  });
  const path = join(work, file);
  writeFileSync(path, lines.join("\n") + "\n");
  const program = ts.createProgram([path], {
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
  });
  return ts.getPreEmitDiagnostics(program).map((diag) => {
    const msg = ts.flattenDiagnosticMessageText(diag.messageText, " ");
    if (!diag.file) return msg;
    const line = diag.file.getLineAndCharacterOfPosition(diag.start).line + 1;
    const obj = where.filter(([l]) => l <= line).pop();
    return `${obj ? obj[1] : diag.file.fileName} (line ${line} of ${file}): ${msg}`;
  });
}

const errs = [...schemaErrors(docs), ...typeErrors(docs, "objects.ts")];
for (const e of errs) console.log(`FAIL ${e}`);
const counts = Object.keys(MODELS)
  .map((k) => `${docs.filter((d) => d.kind === k).length} ${k}`)
  .join(", ");
if (docs.length === 0) {
  console.log("FAIL no PodMonitor or PrometheusRule in the manifest");
  process.exit(1);
}
if (errs.length) process.exit(1);
console.log(`ok   CRD schemas and types: ${counts} valid`);

if (flag === "--self-test") {
  // Each broken copy must fail, or the check above proves nothing.
  const copy = () => JSON.parse(JSON.stringify(docs));
  const first = (objs, kind) => objs.find((d) => d.kind === kind);
  const cases = [
    ["a typo'd PodMonitor field (honorLabel)", "types", (o) => {
      first(o, "PodMonitor").spec.podMetricsEndpoints[0].honorLabel = true;
    }],
    ["a typo'd rule field (fro)", "types", (o) => {
      const r = first(o, "PrometheusRule").spec.groups[0].rules[0];
      r.fro = r.for ?? "5m";
      delete r.for;
    }],
    ["a port given as a number", "types", (o) => {
      first(o, "PodMonitor").spec.podMetricsEndpoints[0].port = 9100;
    }],
    ["a rule duration that is not one (5 minutes)", "schema", (o) => {
      first(o, "PrometheusRule").spec.groups[0].rules[0].for = "5 minutes";
    }],
  ];
  let bad = 0;
  cases.forEach(([what, by, mutate], i) => {
    const objs = copy();
    mutate(objs);
    const found = by === "schema" ? schemaErrors(objs) : typeErrors(objs, `self-test-${i}.ts`);
    if (found.length === 0) {
      console.log(`FAIL self-test: ${what} passed validation`);
      bad++;
    }
  });
  if (bad) process.exit(1);
  console.log(`ok   CRD validation self-test: ${cases.length} broken copies rejected`);
}
