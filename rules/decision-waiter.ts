import type { JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { STREAMS, SUBJECTS } from '../pipeline/streams.ts'
import type { Decision } from '../storage/index.ts'

/**
 * Waits for the rule stage's decision on a record that was just published. The record id is only known once
 * the record is stored, so the decision may already be out: this subscribes to the record's decision subject,
 * then looks in SLUICE_DECISIONS for one already stored. The server handles the subscription before the
 * lookup, so a decision is seen by one or the other. Resolves with undefined after `timeoutMs`.
 */
export async function awaitDecision(
  nc: NatsConnection,
  jsm: JetStreamManager,
  object: string,
  recordId: string,
  timeoutMs: number,
): Promise<Decision | undefined> {
  const subject = SUBJECTS.decision(object, recordId)
  const subscription = nc.subscribe(subject, { max: 1 })
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    const published = (async () => {
      for await (const msg of subscription) return msg.json<Decision>()
    })()
    const stored = jsm.streams.getMessage(STREAMS.decisions.name, { last_by_subj: subject }).then(
      (msg) => (msg ? msg.json<Decision>() : published),
      () => published,
    )
    const timedOut = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs)))
    return await Promise.race([published, stored, timedOut])
  } finally {
    clearTimeout(timer)
    subscription.unsubscribe()
  }
}
