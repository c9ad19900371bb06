// The interop driver: produces or consumes jobs for tests/interop.rs and
// benches/clients.sh, one JSON line per event on stdout (the same contract
// as clients/python/tests/interop_driver.py).
//
//   produce --redis URL --queue Q --count N [--first S] [--batch B] [--pad BYTES]
//           [--compress-above BYTES] [--fail SEQ,..] [--hang SEQ,..] [--attempts A]
//   consume --redis URL --queue Q [--concurrency C] [--lease-ms MS] [--backoff-ms MS]
//           [--expect-done N] [--expect-failures M]
import { parseArgs } from "node:util";
import * as streamq from "../dist/index.js";

const PRIORITIES = ["critical", "high", "medium", "low"];
const { positionals, values: a } = parseArgs({
  allowPositionals: true,
  options: Object.fromEntries(
    ["redis", "queue", "count", "first", "batch", "pad", "compress-above", "fail", "hang", "attempts",
      "concurrency", "lease-ms", "backoff-ms", "expect-done", "expect-failures", "mode"].map((k) => [k, { type: "string" }]),
  ),
});
const num = (k, d) => (a[k] === undefined ? d : Number(a[k]));
const seqs = (k) => new Set((a[k] ?? "").split(",").filter(Boolean).map(Number));
const emit = (event) => process.stdout.write(JSON.stringify(event) + "\n");

async function produce() {
  const queue = await streamq.Queue.open(a.redis, a.queue, { compressAbove: a["compress-above"] === undefined ? null : Number(a["compress-above"]) });
  const fail = seqs("fail");
  const hang = seqs("hang");
  const first = num("first", 0);
  const jobs = [];
  for (let s = first; s < first + num("count", 0); s++) {
    jobs.push({
      payload: { seq: s, origin: "node", fail: fail.has(s), hang: hang.has(s), pad: "x".repeat(num("pad", 0)) },
      priority: PRIORITIES[s % 4], name: "interop", attempts: num("attempts", 3),
    });
  }
  const batch = num("batch", 1000);
  const started = process.hrtime.bigint();
  const ids = [];
  for (let i = 0; i < jobs.length; i += batch) ids.push(...(await queue.enqueueBatch(jobs.slice(i, i + batch))));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  jobs.forEach((job, i) => emit({ seq: job.payload.seq, id: ids[i] }));
  emit({ event: "produced", count: ids.length, seconds });
  await queue.close();
}

async function consume() {
  const queue = await streamq.Queue.open(a.redis, a.queue);
  let done = 0;
  let failed = 0;
  const expectDone = num("expect-done", 0);
  const expectFailures = num("expect-failures", 0);
  const check = () => { if (done >= expectDone && failed >= expectFailures) worker.stop(); };
  const worker = new streamq.Worker(queue, async (job) => {
    const p = job.payload;
    if (p.hang) {
      emit({ event: "started", seq: p.seq, id: job.id });
      await new Promise(() => {});
    }
    if (p.fail) {
      emit({ event: "failed", seq: p.seq, id: job.id, attempt: job.attempt - 1 });
      failed += 1;
      check();
      throw new Error(`interop failure seq=${p.seq}`);
    }
    emit({ event: "done", seq: p.seq, id: job.id, priority: job.priority, attempt: job.attempt - 1, origin: p.origin });
    done += 1;
    check();
  }, {
    concurrency: num("concurrency", 1), lease: num("lease-ms", 30000) / 1000, block: 1,
    backoff: new streamq.Backoff(num("backoff-ms", 50) / 1000, 60, false),
    promoteInterval: 0.02, reclaimInterval: 0.2, grace: 30,
  });
  process.on("SIGTERM", () => worker.stop());
  if (expectDone === 0 && expectFailures === 0) worker.stop();
  await worker.run();
  await queue.close();
}

(positionals[0] === "produce" ? produce() : consume()).catch((err) => {
  console.error(err);
  process.exit(1);
});
