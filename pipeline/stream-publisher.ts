import { createInbox, type MsgHdrs, type NatsConnection, type Subscription } from '@nats-io/transport-node'

/** JetStream's acknowledgement of one stored message. */
export interface StreamAck {
  stream: string
  seq: number
  duplicate: boolean
}

/** JetStream refused or did not answer: nothing can be assumed stored. */
export class StreamPublishError extends Error {}

interface PendingAck {
  resolve: (ack: StreamAck) => void
  reject: (err: Error) => void
  deadline: number
}

interface QueuedMessage {
  subject: string
  data: Uint8Array
  headers?: MsgHdrs
  token: string
}

/**
 * Publishes to JetStream and resolves on its PubAck, for the per-record hot path. Measured (bench/, README) as
 * the largest cost per request with nats.js's `js.publish`: each call is a request with its own inbox
 * subscription entry, timer and pre-built error objects, and a socket write of its own. Here one inbox
 * subscription serves every publish, one sweep times them out, and publishes made in the same event-loop
 * turn leave in one write.
 */
export class StreamPublisher {
  readonly #nc: NatsConnection
  readonly #timeoutMs: number
  readonly #inbox: string
  readonly #sub: Subscription
  readonly #pending = new Map<string, PendingAck>()
  readonly #sweep: NodeJS.Timeout
  #queue: QueuedMessage[] = []
  #next = 0

  constructor(nc: NatsConnection, opts: { timeoutMs: number }) {
    this.#nc = nc
    this.#timeoutMs = opts.timeoutMs
    this.#inbox = createInbox()
    this.#sub = nc.subscribe(`${this.#inbox}.*`, { callback: (_err, msg) => this.#onAck(msg.subject, msg.data, msg.headers) })
    this.#sweep = setInterval(() => this.#expire(), Math.min(250, this.#timeoutMs)).unref()
  }

  publish(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<StreamAck> {
    const token = (this.#next++).toString(36)
    if (this.#queue.length === 0) setImmediate(() => this.#flush())
    this.#queue.push({ subject, data, headers, token })
    return new Promise((resolve, reject) => this.#pending.set(token, { resolve, reject, deadline: Date.now() + this.#timeoutMs }))
  }

  #flush(): void {
    const queue = this.#queue
    this.#queue = []
    for (const m of queue) {
      try {
        this.#nc.publish(m.subject, m.data, { reply: `${this.#inbox}.${m.token}`, headers: m.headers })
      } catch (err) {
        this.#settle(m.token, new StreamPublishError(`cannot publish: ${(err as Error).message}`))
      }
    }
  }

  #onAck(subject: string, data: Uint8Array, headers?: MsgHdrs): void {
    const token = subject.slice(this.#inbox.length + 1)
    // A status reply (503: no JetStream listens on the subject) carries no body.
    if (headers?.hasError) return this.#settle(token, new StreamPublishError(`JetStream answered ${headers.code} ${headers.description}`))
    let ack: { stream?: string; seq?: number; duplicate?: boolean; error?: { code: number; description: string } }
    try {
      ack = JSON.parse(Buffer.from(data).toString())
    } catch {
      return this.#settle(token, new StreamPublishError('JetStream sent an unreadable acknowledgement'))
    }
    if (ack.error || !ack.stream) return this.#settle(token, new StreamPublishError(`JetStream refused the message: ${ack.error?.description ?? 'no stream'}`))
    this.#settle(token, { stream: ack.stream, seq: ack.seq as number, duplicate: ack.duplicate === true })
  }

  #settle(token: string, outcome: StreamAck | Error): void {
    const pending = this.#pending.get(token)
    if (!pending) return
    this.#pending.delete(token)
    if (outcome instanceof Error) pending.reject(outcome)
    else pending.resolve(outcome)
  }

  #expire(now = Date.now()): void {
    // Deadlines grow in insertion order, so the first one still in time ends the sweep.
    for (const [token, pending] of this.#pending) {
      if (pending.deadline > now) break
      this.#settle(token, new StreamPublishError(`no acknowledgement from JetStream within ${this.#timeoutMs} ms`))
    }
  }

  /** Stops the sweep and fails what is still waiting. */
  close(): void {
    clearInterval(this.#sweep)
    this.#sub.unsubscribe()
    for (const token of [...this.#pending.keys()]) this.#settle(token, new StreamPublishError('the publisher was closed'))
  }
}
