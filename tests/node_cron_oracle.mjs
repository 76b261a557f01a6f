// Reference answers from graphile-worker's own crontab parser, for
// tests/test_cron_parser.py.
//
// Usage: node node_cron_oracle.mjs INSTALL_FOLDER < request.json > answer.json
//
// INSTALL_FOLDER holds node_modules/graphile-worker (0.18.0). The request is
// {"year": 2026, "cases": [{"text": "...", "full": true}, ...],
//  "idchars": true}. For each case the answer holds either {"error": message}
// or {"items": [...]}, each item with its task, identifier, options, payload
// and the value sets its matcher uses; with "full", also "runs": the minutes
// of the year that the matcher accepts, as [first, end) minute offsets from
// the start of the year. With "idchars", the answer also lists, as [first, end)
// ranges, the code points that json5 (through its own util helpers, the ones
// its parser calls) accepts to start and to continue an unquoted key.
// Numbers that JSON cannot hold are written as {"$nonfinite": "NaN"} etc.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const folder = process.argv[2];
const main = join(folder, "node_modules", "graphile-worker", "dist", "index.js");
const { parseCrontab } = await import(pathToFileURL(main).href);
const json5Util = createRequire(main)("json5/lib/util.js");
const request = JSON.parse(readFileSync(0, "utf8"));

const MINUTE_MS = 60 * 1000;

function yearDigests(year) {
  const digests = [];
  const end = Date.UTC(year + 1, 0, 1);
  for (let ms = Date.UTC(year, 0, 1); ms < end; ms += MINUTE_MS) {
    const at = new Date(ms);
    digests.push({
      min: at.getUTCMinutes(),
      hour: at.getUTCHours(),
      date: at.getUTCDate(),
      month: at.getUTCMonth() + 1,
      dow: at.getUTCDay(),
    });
  }
  return digests;
}

function runs(accepts, count) {
  const found = [];
  let start = -1;
  for (let i = 0; i <= count; i++) {
    const yes = i < count && accepts(i);
    if (yes && start < 0) start = i;
    if (!yes && start >= 0) {
      found.push([start, i]);
      start = -1;
    }
  }
  return found;
}

let digests = null;

function describe(item, full) {
  const described = {
    task: item.task,
    identifier: item.identifier,
    options: item.options,
    payload: item.payload,
    sets: item.match.parsedCronMatch,
  };
  if (full) {
    digests ??= yearDigests(request.year);
    described.runs = runs((i) => item.match(digests[i]), digests.length);
  }
  return described;
}

const results = request.cases.map(({ text, full }) => {
  let items;
  try {
    items = parseCrontab(text);
  } catch (e) {
    return { error: String(e && e.message) };
  }
  return { items: items.map((item) => describe(item, full)) };
});

function accepted(test) {
  return runs(
    (cp) => (cp < 0xd800 || cp > 0xdfff) && test(String.fromCodePoint(cp)),
    0x110000,
  );
}

const answer = { results };
if (request.idchars) {
  answer.idchars = {
    start: accepted(json5Util.isIdStartChar),
    part: accepted(json5Util.isIdContinueChar),
  };
}

const nonfinite = (key, value) =>
  typeof value === "number" && !Number.isFinite(value)
    ? { $nonfinite: String(value) }
    : value;
process.stdout.write(JSON.stringify(answer, nonfinite));
