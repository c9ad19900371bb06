/** streamq for Node: enqueue to and work a streamq queue (Redis Streams,
 * strict priorities, at-least-once) beside Rust and Python producers and
 * workers, with the same scripts (docs/protocol.md). */
export * from "./errors";
export { PRIORITIES, Priority, QueueKeys, partitionOf } from "./keys";
export { Backoff, Stats } from "./protocol";
export { JobOptions, NewJob, Queue, QueueOptions } from "./queue";
export { JobContext, Outcomes, Worker, WorkerOptions, defaultConsumerName } from "./worker";
