import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import { SUBJECTS } from '../pipeline/streams.ts'
import type { Decision } from '../storage/index.ts'

/**
 * Waits for the rule stage's decision on a record about to be published. It subscribes to the record's
 * decision subject before the record is published (the stage announces decisions on core NATS only, once
 * stored), so the decision cannot go out unseen.
 */
export class DecisionWatch {
  readonly #subscription: Subscription
  readonly #decision: Promise<Decision | undefined>

  constructor(nc: NatsConnection, object: string, recordId: string) {
    const subscription = nc.subscribe(SUBJECTS.decision(object, recordId), { max: 1 })
    this.#subscription = subscription
    this.#decision = (async () => {
      for await (const msg of subscription) return msg.json<Decision>()
      return undefined
    })()
  }

  /** The decision, or undefined when none came within `timeoutMs`. */
  async result(timeoutMs: number): Promise<Decision | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined
    const timedOut = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)))
    try {
      return await Promise.race([this.#decision, timedOut])
    } finally {
      clearTimeout(timer)
      this.cancel()
    }
  }

  cancel(): void {
    this.#subscription.unsubscribe()
  }
}
