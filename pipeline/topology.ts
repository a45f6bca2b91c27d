import {
  AckPolicy,
  type ConsumerConfig,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream'
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
  for (const consumer of Object.values(CONSUMERS)) await ensureConsumer(jsm, consumer.stream, sinkConsumerConfig(consumer.durable, config))
}

type SinkConsumer = (typeof CONSUMERS)[keyof typeof CONSUMERS]

function sinkConsumerConfig(durable: string, config: SluiceConfig): DurableConfig {
  return {
    durable_name: durable,
    // The sinks write in stream order and ack a whole batch through its last message.
    ack_policy: AckPolicy.All,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(config.sink.ackWaitSeconds * 1000),
    max_ack_pending: 20_000,
  }
}

/**
 * Run by a sink as it starts. Records an earlier sink process took and never acked (it crashed) would come back
 * only after the ack wait, and acking a newer batch through its last message would ack them unstored: so such a
 * consumer is made anew right after its ack floor first.
 */
export async function resumeSinkConsumer(jsm: JetStreamManager, consumer: SinkConsumer, config: SluiceConfig): Promise<void> {
  await ensureConsumer(jsm, consumer.stream, sinkConsumerConfig(consumer.durable, config), { restartUnacked: true })
}

type DurableConfig = Partial<ConsumerConfig> & { durable_name: string }

/**
 * Creates a durable consumer, or brings an existing one to `wanted`. One whose ack policy differs (made by an
 * older Sluice), or, with `restartUnacked`, one that delivered records it never had acked, is made anew right
 * after its ack floor: the policy cannot be changed in place, and stages that need stream order must not get
 * the unacked records back behind newer ones. Returns the consumer's info, whose ack floor is what it finished.
 */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  wanted: DurableConfig,
  opts: { restartUnacked?: boolean } = {},
): Promise<ConsumerInfo> {
  const durable = wanted.durable_name
  const info = await jsm.consumers.info(stream, durable).catch((err) => {
    if (isNotFound(err)) return undefined
    throw err
  })
  if (!info) return jsm.consumers.add(stream, wanted)
  const unacked = opts.restartUnacked === true && info.delivered.stream_seq > info.ack_floor.stream_seq
  if (info.config.ack_policy !== wanted.ack_policy || unacked) {
    const after = info.ack_floor.stream_seq
    await jsm.consumers.delete(stream, durable)
    const made = await jsm.consumers.add(stream, {
      ...wanted,
      ...(after > 0 && { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: after + 1 }),
    })
    // A new consumer reports no ack floor; what the stage finished is still everything up to `after`.
    made.ack_floor.stream_seq = after
    return made
  }
  if (info.config.ack_wait === wanted.ack_wait && info.config.max_ack_pending === wanted.max_ack_pending) return info
  return jsm.consumers.update(stream, durable, { ack_wait: wanted.ack_wait, max_ack_pending: wanted.max_ack_pending })
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
