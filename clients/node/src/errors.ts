/** Typed errors: every failure a caller can act on has its own class. */
export class StreamqError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
/** An empty, too long, or braced/whitespaced queue name or prefix. */
export class InvalidName extends StreamqError {}
/** A priority other than critical, high, medium or low. */
export class UnknownPriority extends StreamqError {}
/** Redis older than 7.0 (or Valkey older than 7.2). */
export class UnsupportedServer extends StreamqError {}
/** A layout version this client does not know: refuse rather than guess. */
export class UnknownLayout extends StreamqError {}
/** A queue key holding another type: another program uses the name. */
export class WrongKeyType extends StreamqError {}
/** A payload or envelope over the queue's limit. */
export class PayloadTooLarge extends StreamqError {}
/** An envelope or payload that does not decode: the job is poison. */
export class DecodeError extends StreamqError {}
/** A script reply this client does not understand. */
export class UnexpectedReply extends StreamqError {}
/** The backlog bound would be exceeded; nothing was enqueued. */
export class QueueFull extends StreamqError {
  constructor(readonly backlog: number, readonly limit: number) {
    super(`queue full: ${backlog} jobs waiting or delayed, the limit is ${limit}`);
  }
}
/** Throw from a handler to dead-letter the job at once. */
export class PermanentError extends Error {}
