// BullMQ producer plus workers on the same box, shaped like `streamq bench`'s
// saturation run: 2 producers adding 1 KiB jobs in bulks of 100, 2 workers
// with concurrency 64 each, one Redis. Prints one JSON line.
// Usage: node bench.js [redis port] [jobs]
const { Queue, Worker } = require('bullmq');

const port = Number(process.argv[2] || 6379);
const jobs = Number(process.argv[3] || 100000);
const connection = { host: '127.0.0.1', port };
const name = 'bullmq-bench';
const payload = 'x'.repeat(1024);

async function main() {
  const queue = new Queue(name, { connection });
  await queue.obliterate({ force: true }).catch(() => {});
  let done = 0;
  let finish;
  const finished = new Promise((resolve) => { finish = resolve; });
  const cpu0 = process.cpuUsage();
  const started = process.hrtime.bigint();
  const workers = [0, 1].map(() => new Worker(name, async () => {}, {
    connection, concurrency: 64, removeOnComplete: { count: 0 }, removeOnFail: { count: 0 },
  }));
  for (const w of workers) {
    w.on('completed', () => { done += 1; if (done === jobs) finish(); });
  }
  const producers = [0, 1].map(async (p) => {
    const mine = Math.ceil(jobs / 2) - (p === 1 ? Math.ceil(jobs / 2) * 2 - jobs : 0);
    for (let sent = 0; sent < mine; sent += 100) {
      const n = Math.min(100, mine - sent);
      await queue.addBulk(Array.from({ length: n }, () => ({
        name: 'job', data: { body: payload }, opts: { removeOnComplete: true },
      })));
    }
  });
  await Promise.all(producers);
  await finished;
  const secs = Number(process.hrtime.bigint() - started) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  console.log(JSON.stringify({
    mode: 'bullmq', jobs, e2e_jobs_per_s: Math.round(jobs / secs),
    client_cpu_us_per_job: (cpu.user + cpu.system) / jobs,
  }));
  await Promise.all(workers.map((w) => w.close()));
  await queue.close();
}

main().catch((e) => { console.error(e); process.exit(1); });
