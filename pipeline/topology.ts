import { AckPolicy, DeliverPolicy, DiscardPolicy, type JetStreamManager, RetentionPolicy, StorageType, type StreamConfig } from '@nats-io/jetstream'
import { nanos } from '@nats-io/transport-node'
import type { SluiceConfig } from './config.ts'
import { CONSUMERS, STREAMS } from './streams.ts'

const DAY_MS = 24 * 3600 * 1000

/** Creates (or updates to the configured limits) every stream and durable consumer. Safe to run from every process. */
export async function ensureTopology(jsm: JetStreamManager, config: SluiceConfig): Promise<void> {
  await upsertStream(jsm, {
    name: STREAMS.records.name,
    subjects: [...STREAMS.records.subjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(config.streams.recordRetentionDays * DAY_MS),
    duplicate_window: nanos(config.streams.duplicateWindowSeconds * 1000),
    num_replicas: config.streams.replicas,
  })
  // Rule outcomes. Decisions are kept until the rule outcome sink has stored them (and for sync waiters), a
  // shorter time than alerts, which subscribers outside Sluice read.
  for (const [stream, days] of [
    [STREAMS.alerts, config.streams.alertRetentionDays],
    [STREAMS.decisions, config.streams.decisionRetentionDays],
    [STREAMS.replay, config.streams.alertRetentionDays],
  ] as const) {
    await upsertStream(jsm, {
      name: stream.name,
      subjects: [...stream.subjects],
      retention: RetentionPolicy.Limits,
      storage: StorageType.File,
      discard: DiscardPolicy.Old,
      max_age: nanos(days * DAY_MS),
      num_replicas: config.streams.replicas,
    })
  }
  // Schema versions are few and small: keep them all.
  await upsertStream(jsm, {
    name: STREAMS.schemas.name,
    subjects: [...STREAMS.schemas.subjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    num_replicas: config.streams.replicas,
  })
  for (const consumer of Object.values(CONSUMERS)) {
    const wanted = {
      durable_name: consumer.durable,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(config.sink.ackWaitSeconds * 1000),
      max_ack_pending: 20_000,
    }
    try {
      await jsm.consumers.info(consumer.stream, consumer.durable)
      await jsm.consumers.update(consumer.stream, consumer.durable, { ack_wait: wanted.ack_wait, max_ack_pending: wanted.max_ack_pending })
    } catch (err) {
      if (!isNotFound(err)) throw err
      await jsm.consumers.add(consumer.stream, wanted)
    }
  }
}

async function upsertStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.info(config.name)
    await jsm.streams.update(config.name, config)
  } catch (err) {
    if (!isNotFound(err)) throw err
    await jsm.streams.add(config)
  }
}

function isNotFound(err: unknown): boolean {
  return /not found/i.test((err as Error)?.message ?? '')
}
