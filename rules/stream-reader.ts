import { DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg, type OrderedConsumerOptions } from '@nats-io/jetstream'
import { decodeRecordMessage, type Envelope } from '../pipeline/envelope.ts'
import { laneOfSubject, partitionOfSubject, RULE_CONSUMERS, STREAMS, SUBJECTS } from '../pipeline/streams.ts'
import { recordSeq, type SchemaRegistry } from '../storage/index.ts'
import { type RuleState, recordTime, type StageRecord } from './rule-state.ts'

/** Where a read of the record stream starts: a stream sequence, an arrival time (epoch ms), or the oldest record kept. */
export type StreamPosition = { seq: number } | { time: number } | 'first'

/**
 * Reads the messages of a stream matching `filter`, in stream order, from `from` up to `untilSeq` (included;
 * default: what the stream holds when the read starts) or until `onMessage` answers `stop`, through an
 * ordered consumer deleted afterwards.
 */
export async function readStream(
  js: JetStreamClient,
  opts: {
    stream?: string
    filter: string
    from: StreamPosition
    untilSeq?: number
    /** Answers `stop` (or a promise of it) to end the read. */
    onMessage: (msg: JsMsg) => unknown
  },
): Promise<void> {
  const start: Partial<OrderedConsumerOptions> =
    opts.from === 'first'
      ? { deliver_policy: DeliverPolicy.All }
      : 'seq' in opts.from
        ? { opt_start_seq: Math.max(1, opts.from.seq) }
        : { opt_start_time: new Date(Math.max(0, opts.from.time)).toISOString() }
  const consumer = await js.consumers.get(opts.stream ?? STREAMS.records.name, { filter_subjects: opts.filter, ...start })
  try {
    const { num_pending: pending } = await consumer.info(true)
    if (pending === 0) return
    // A batch job's message is up to 32 KB: this holds at most 8 MB (rules/stage.ts, RULE_PULL_MESSAGES, says why that matters).
    const messages = await consumer.consume({ max_messages: 256 })
    for await (const msg of messages) {
      if (opts.untilSeq !== undefined && msg.seq > opts.untilSeq) break
      if ((await opts.onMessage(msg)) === 'stop' || msg.info.pending === 0 || msg.seq === opts.untilSeq) break
    }
    await messages.close()
  } finally {
    await consumer.delete().catch(() => {})
  }
}

/** A record message's records decoded for the rule stage; none for a message that holds no envelope (the live stage terminated it). */
export function stageRecordsOf(msg: JsMsg, registry: SchemaRegistry): StageRecord[] {
  let envelopes: Envelope[]
  try {
    envelopes = decodeRecordMessage(msg.data)
  } catch {
    return []
  }
  return envelopes.map((env, position) => ({ env, seq: recordSeq(msg.seq, position), time: recordTime(env, registry) }))
}

/**
 * Fills `state` with what it held after the stage last processed `lastSeq` of each rule consumer (by its durable
 * name: a partition's lane; 0: nothing yet):
 * per object, the records within the longest span anything reads them over (its longest window, the activity
 * lookup window, all retained accounts), counted back from when the earliest of those last records arrived,
 * less `lateMs` for records that arrive after their own time. Records of other partitions, and records past
 * their lane's last processed one, are skipped. Returns how many records it took in.
 */
export async function rebuildState(
  js: JetStreamClient,
  jsm: JetStreamManager,
  opts: { registry: SchemaRegistry; state: RuleState; lastSeq: ReadonlyMap<string, number>; lateMs: number },
): Promise<number> {
  const processed = [...opts.lastSeq].filter(([, seq]) => seq > 0)
  if (processed.length === 0) return 0
  let anchor = Number.POSITIVE_INFINITY
  for (const [, seq] of processed) {
    const last = await jsm.streams.getMessage(STREAMS.records.name, { seq }).catch(() => null)
    anchor = Math.min(anchor, last ? last.time.getTime() : Date.now())
  }
  const untilSeq = Math.max(...processed.map(([, seq]) => seq))
  let absorbed = 0
  for (const object of opts.registry.objects()) {
    const span = opts.state.spanOf(object)
    if (span === 0) continue
    await readStream(js, {
      filter: SUBJECTS.recordsOf(object),
      from: span === Number.POSITIVE_INFINITY ? 'first' : { time: anchor - span - opts.lateMs },
      untilSeq,
      onMessage: (msg) => {
        if (msg.seq > (opts.lastSeq.get(RULE_CONSUMERS.durable(partitionOfSubject(msg.subject), laneOfSubject(msg.subject))) ?? 0)) return
        for (const item of stageRecordsOf(msg, opts.registry)) {
          opts.state.absorb(item)
          absorbed++
        }
      },
    })
  }
  return absorbed
}
