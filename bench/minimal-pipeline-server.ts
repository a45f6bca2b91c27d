// The ingest bench's second baseline: the least the ingest path's job takes on this stack, and so the ceiling of
// Sluice's ratio to the bare server. fastify parses the record; it is published to JetStream (file storage, a
// dedup id) with Sluice's own publisher and answered 202 once JetStream acked it; a consumer stores it in DuckDB
// with Sluice's own store, writing every flush interval and acking after the write. Nothing else: no API key,
// schema, validation, metrics or idempotent retries. Same defaults as `sluice serve` where they apply.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AckPolicy, type JsMsg, jetstream, jetstreamManager, StorageType } from '@nats-io/jetstream'
import { connect, headers, nanos } from '@nats-io/transport-node'
import Fastify from 'fastify'
import { loadConfig } from '../pipeline/config.ts'
import { envelopeJson, newRecordId } from '../pipeline/envelope.ts'
import { startNatsServer } from '../pipeline/nats-server.ts'
import { dedupId } from '../pipeline/publisher.ts'
import { StreamPublisher } from '../pipeline/stream-publisher.ts'
import { AnalyticsStore, type EnvelopeRow, recordSeq } from '../storage/analytics.ts'

const OBJECT = 'transaction'
const SUBJECT = `minimal.${OBJECT}`
const config = loadConfig({ env: {} })
const dataDir = mkdtempSync(join(tmpdir(), 'sluice-minimal-'))

const natsServer = await startNatsServer({ storeDir: join(dataDir, 'nats'), cpus: config.embeddedNats.cpus })
const nc = await connect({ servers: natsServer.url })
const jsm = await jetstreamManager(nc)
await jsm.streams.add({
  name: 'MINIMAL',
  subjects: [SUBJECT],
  storage: StorageType.File,
  duplicate_window: nanos(config.streams.duplicateWindowSeconds * 1000),
})
await jsm.consumers.add('MINIMAL', { durable_name: 'store', ack_policy: AckPolicy.All, max_ack_pending: 20_000 })

const store = await AnalyticsStore.open(join(dataDir, 'analytics.duckdb'), config.sink)
await store.ensureTable({ ...JSON.parse(readFileSync('fixtures/schemas/transaction.json', 'utf8')), version: 1 })
const messages = await (await jetstream(nc).consumers.get('MINIMAL', 'store')).consume({ max_messages: 256 })
let pending: EnvelopeRow[] = []
let last: JsMsg | undefined
let writing = Promise.resolve()
const writes = setInterval(() => {
  const rows = pending
  const ackThrough = last
  pending = []
  last = undefined
  if (ackThrough) writing = writing.then(() => store.append(OBJECT, rows)).then(() => ackThrough.ack())
}, config.sink.flushIntervalMs)
const consumed = (async () => {
  for await (const m of messages) {
    pending.push({ seq: recordSeq(m.seq), envelopes: Buffer.concat([Buffer.from('['), m.data, Buffer.from(']')]) })
    last = m
  }
})()

const publisher = new StreamPublisher(nc, { timeoutMs: 5000 })
const app = Fastify()
app.post('/transaction', async (request, reply) => {
  const recordJson = JSON.stringify(request.body)
  const recordId = newRecordId()
  const envelope = envelopeJson(
    { record_id: recordId, object: OBJECT, received_at: Date.now(), source: 'api', schema_version: 1, record: request.body as Record<string, unknown> },
    recordJson,
  )
  const msgHeaders = headers()
  msgHeaders.set('Nats-Msg-Id', dedupId(OBJECT, recordJson))
  const ack = await publisher.publish(SUBJECT, Buffer.from(envelope), msgHeaders)
  return reply.code(202).send({ record_id: recordId, seq: ack.seq })
})
await app.listen({ host: '127.0.0.1', port: Number(process.env.MINIMAL_SERVER_PORT ?? 0) })

process.once('SIGTERM', async () => {
  await app.close()
  await messages.close()
  await consumed
  clearInterval(writes)
  await writing
  publisher.close()
  await nc.drain()
  await natsServer.stop()
  rmSync(dataDir, { recursive: true, force: true })
  process.exit(0)
})
