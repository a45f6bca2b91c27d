import { randomBytes } from 'node:crypto'
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises'
import type { JetStreamManager } from '@nats-io/jetstream'
import { type BatchJob, type BatchJobStore, FINAL_STATES, type RowError, type SchemaRegistry } from '../../storage/index.ts'
import type { SluiceConfig } from '../config.ts'
import { isSluiceError } from '../errors.ts'
import type { RecordBatch, RecordIngestor } from '../ingest.ts'
import type { Logger } from '../logger.ts'
import type { JobStoredCounts, QueryClient } from '../query.ts'
import { CONSUMERS, RULE_CONSUMERS, STREAMS, SUBJECTS } from '../streams.ts'
import { countPayload, PayloadError, type PayloadItem, type PayloadSettings, readPayload, typeCsvRecord } from './payload.ts'

export interface BatchWorkerOptions {
  jobs: BatchJobStore
  registry: SchemaRegistry
  ingestor: RecordIngestor
  queries: QueryClient
  /** Tells whether a rule stage is part of this deployment (its consumers exist). */
  jsm: JetStreamManager
  log: Logger
  config: SluiceConfig['batch']
}

/** Rows of a job checked and published together; the checkpoint moves past them once JetStream holds them all. */
interface Chunk {
  readonly batch: RecordBatch
  readonly rows: number
  /** Checks a row and sends it on its way, noting why it is refused if it is. */
  add(item: PayloadItem): Promise<void>
  /** What the job notes once the chunk is stored: its counts, its rows' errors (in row order), the new checkpoint. */
  outcome(): { accepted: number; rejected: number; errors: RowError[]; checkpoint_row: number }
}

/** How often a job waiting for the analytics sink asks for its backlog. */
const SINK_BACKLOG_POLL_MS = 50

/** What a job saw of the analytics sink's progress: its consumer's ack floor, and when that last moved. */
interface SinkProgress {
  ackFloor: number
  movedAt: number
  /** Already reported as storing nothing. */
  stalled: boolean
}

/** The job was taken away (lease lost), cancelled, or the worker is stopping: leave it where it is. */
class JobInterrupted extends Error {}

/**
 * Runs batch jobs: claims one (a lease in SQLite, so two workers never run the same job), validates the
 * payload, then validates and publishes its records chunk by chunk through the same RecordIngestor as the
 * real-time path, many records to a message. Each message id is derived from job, chunk and partition, and the
 * checkpoint moves only after a chunk is acknowledged, so a worker that dies is replaced (after its lease) by
 * one that resumes at the checkpoint: JetStream drops the re-sent messages it already holds. A job completes
 * when every accepted record is queryable (and decided, where a rule stage runs).
 */
export class BatchWorker {
  readonly #opts: BatchWorkerOptions
  readonly #id = `worker_${randomBytes(4).toString('hex')}`
  #stopping = false
  /** Set when another worker took the job over (this one was presumed dead): it must stop at once. */
  #leaseLost = false
  #loop?: Promise<void>

  constructor(opts: BatchWorkerOptions) {
    this.#opts = opts
  }

  start(): void {
    this.#loop = this.#run()
  }

  /** Finishes the chunk in hand and returns; an unfinished job is resumed by the next worker to claim it. */
  async stop(): Promise<void> {
    this.#stopping = true
    await this.#loop
  }

  async #run(): Promise<void> {
    const { jobs, config, log } = this.#opts
    while (!this.#stopping) {
      const job = jobs.claim(this.#id, config.leaseSeconds * 1000)
      if (!job) {
        await sleep(config.pollIntervalMs)
        continue
      }
      try {
        await this.#runJob(job)
      } catch (err) {
        if (err instanceof JobInterrupted) continue
        if (err instanceof PayloadError) {
          this.#fail(job.id, err.message)
          continue
        }
        // Infrastructure (NATS, the sink) is away: keep the job, let the lease lapse, try again later.
        log.warn({ err, job: job.id }, 'batch job paused; it will be resumed')
        await sleep(Math.min(5000, config.leaseSeconds * 1000))
      }
    }
  }

  #fail(id: string, error: string): void {
    this.#opts.log.warn({ job: id, error }, 'batch job failed')
    this.#opts.jobs.transition(id, 'failed', { error })
  }

  /** Whether the job must be left: stopping, cancelled, or taken over. Renews the lease as it asks. */
  #interrupted(id: string): boolean {
    const { jobs, config } = this.#opts
    const job = jobs.get(id)
    if (this.#stopping || !job || FINAL_STATES.has(job.state) || job.cancel_requested) return true
    if (!jobs.renewLease(id, this.#id, config.leaseSeconds * 1000)) this.#leaseLost = true
    return this.#leaseLost
  }

  /** Throws JobInterrupted when the job must be left, marking a cancelled one so. */
  #checkpoint(id: string): void {
    if (!this.#interrupted(id)) return
    const job = this.#opts.jobs.get(id)
    if (job?.cancel_requested && !FINAL_STATES.has(job.state)) this.#opts.jobs.transition(id, 'cancelled')
    throw new JobInterrupted()
  }

  async #runJob(claimed: BatchJob): Promise<void> {
    const { jobs, log, config } = this.#opts
    let job = claimed
    log.info({ job: job.id, state: job.state, checkpoint: job.checkpoint_row }, 'batch job claimed')
    // The lease is renewed on a clock, not per chunk: a slow chunk must not let a second worker in.
    const leaseMs = config.leaseSeconds * 1000
    const renewal = setInterval(() => {
      if (!jobs.renewLease(job.id, this.#id, leaseMs)) this.#leaseLost = true
    }, leaseMs / 3)
    this.#leaseLost = false
    try {
      if (job.state === 'queued') job = jobs.transition(job.id, 'validating')
      if (job.state === 'validating') job = await this.#validate(job)
      jobs.rewindToCheckpoint(job.id)
      await this.#process(job)
    } finally {
      clearInterval(renewal)
    }
  }

  /** A first pass: can the payload be read, how many records, for which object. */
  async #validate(job: BatchJob): Promise<BatchJob> {
    const { jobs, registry, config } = this.#opts
    const settings: PayloadSettings = {}
    let total = 0
    let checkedAt = 0
    for await (const count of countPayload(job.payload_path, job.format, { compressed: job.compressed, maxBytes: config.maxBytes, settings })) {
      // The payload's pieces come from a buffer without a turn of the event loop between them: give real-time requests theirs.
      await nextTurn()
      total += count
      if (total > config.maxRecords) throw new PayloadError(`the payload holds more than ${config.maxRecords} records, the limit per job`)
      if (total - checkedAt >= 50_000) {
        checkedAt = total
        this.#checkpoint(job.id)
      }
    }
    this.#checkpoint(job.id)
    const object = job.object ?? settings.object
    if (!object) throw new PayloadError('the payload does not say which object its records are: give ?object= or an "object" field')
    if (settings.object && job.object && settings.object !== job.object)
      throw new PayloadError(`the payload says object ${settings.object}, the request ${job.object}`)
    if (!registry.current(object)) throw new PayloadError(`there is no object type ${object}`)
    return jobs.transition(job.id, 'processing', {
      object,
      total,
      update_schema: settings.update_schema ?? job.update_schema,
      evaluate_rules: settings.evaluate_rules ?? job.evaluate_rules,
    })
  }

  async #process(job: BatchJob): Promise<void> {
    const { config } = this.#opts
    const object = job.object as string
    let chunk: Chunk | undefined
    let storedAskedAt = Date.now()
    const sink: SinkProgress = { ackFloor: -1, movedAt: Date.now(), stalled: false }
    // The next chunk is read and validated while the one before waits for JetStream's acks; chunks are still
    // noted (and the checkpoint moved) one after another, in order, each once JetStream has all of it.
    let sending: Promise<() => void> | undefined
    const notePrevious = async () => {
      if (!sending) return
      const note = await sending
      sending = undefined
      note()
    }
    const send = async (full: Chunk) => {
      const sent = full.batch.publish().then(() => () => {
        // Taken over meanwhile: the new holder makes this chunk again and notes it; this worker leaves the job.
        if (this.#opts.jobs.recordChunk(job.id, this.#id, full.outcome())) return
        this.#leaseLost = true
        throw new JobInterrupted()
      })
      // Its failure is thrown where it is awaited, once the chunk before is noted.
      sent.catch(() => {})
      await notePrevious()
      sending = sent
      await this.#awaitSinkBacklog(job.id, sink)
      // The sink stores while records are still going out: show that progress too, every few seconds.
      if (Date.now() - storedAskedAt > 2000) {
        storedAskedAt = Date.now()
        await this.#refreshCounts(job.id, object)
      }
    }
    for await (const items of readPayload(job.payload_path, job.format, { compressed: job.compressed, maxBytes: config.maxBytes })) {
      // As in #validate: a piece's rows take a few ms, a run of buffered pieces hundreds.
      await nextTurn()
      for (const item of items) {
        if (item.row <= job.checkpoint_row) continue
        if (!chunk) {
          // A chunk's messages go out as it is made, so a chunk once begun is finished and counted. Nothing more
          // is begun once the job is to be left: what went out is noted, then #checkpoint throws.
          if (this.#interrupted(job.id)) {
            await notePrevious()
            this.#checkpoint(job.id)
          }
          // The chunk's first row names its messages: a resumed job makes the same chunks, which JetStream then stores once.
          chunk = this.#startChunk(job, object, item.row)
        }
        await chunk.add(item)
        // Chunks are exactly chunkSize rows from the first.
        if (chunk.rows < config.chunkSize) continue
        await send(chunk)
        chunk = undefined
      }
    }
    if (chunk) await send(chunk)
    await notePrevious()
    this.#checkpoint(job.id)
    await this.#awaitStored(job.id, object)
  }

  /** A chunk starting at `firstRow`: its rows are checked and sent on their way as they are added. */
  #startChunk(job: BatchJob, object: string, firstRow: number): Chunk {
    const { ingestor, registry } = this.#opts
    const schema = registry.current(object)?.schema
    const idField = schema?.id_field
    const batch = ingestor.batch(object, {
      source: job.source,
      actor: job.created_by,
      updateSchema: job.update_schema,
      evaluateRules: job.evaluate_rules,
      jobId: job.id,
      batchId: `${job.id}:${firstRow}`,
    })
    const errors: RowError[] = []
    const rowError = (row: number, record: unknown, pointer: string, message: string) => {
      const key = idField && record && typeof record === 'object' ? (record as Record<string, unknown>)[idField] : undefined
      errors.push({ row, record_key: key === undefined || key === null ? null : String(key), pointer, message })
    }
    let rows = 0
    let lastRow = firstRow
    return {
      batch,
      get rows() {
        return rows
      },
      async add(item) {
        rows++
        lastRow = item.row
        if ('unreadable' in item) return rowError(item.row, undefined, '', item.unreadable)
        const record = 'cells' in item ? typeCsvRecord(item.header, item.cells, schema) : item.record
        for (const e of (await batch.add(record)) ?? []) rowError(item.row, record, e.pointer, e.message)
      },
      outcome: () => ({ accepted: batch.accepted, rejected: rows - batch.accepted, errors, checkpoint_row: lastRow }),
    }
  }

  /** Asks the analytics store how many of the job's records it holds and the rule stage decided on, and notes it; the last counts if it does not answer. */
  async #refreshCounts(id: string, object: string): Promise<JobStoredCounts> {
    const { jobs, queries } = this.#opts
    try {
      const counts = await queries.request(SUBJECTS.queryJobStored, { object, job_id: id })
      jobs.setProgress(id, counts)
      return counts
    } catch (err) {
      if (!isSluiceError(err)) throw err
      const job = jobs.get(id) as BatchJob
      return { stored: job.stored, evaluated: job.evaluated }
    }
  }

  /**
   * Waits while the analytics sink has more than batch.sinkBacklogMessages messages to store, so that real-time
   * records are not queued behind a whole job. Returns at once when there is no sink consumer or the job is to be
   * left, and while the sink has stored nothing for batch.sinkStallSeconds (it is stopped: the job is not held
   * for it). `sink` follows the sink's progress from chunk to chunk of the job.
   */
  async #awaitSinkBacklog(id: string, sink: SinkProgress): Promise<void> {
    const { jsm, config } = this.#opts
    if (config.sinkBacklogMessages === 0) return
    for (;;) {
      const info = await jsm.consumers.info(CONSUMERS.analyticsSink.stream, CONSUMERS.analyticsSink.durable).catch(() => null)
      if (!info) return
      const now = Date.now()
      if (info.ack_floor.stream_seq !== sink.ackFloor) {
        sink.ackFloor = info.ack_floor.stream_seq
        sink.movedAt = now
        sink.stalled = false
      }
      const backlog = info.num_pending + info.num_ack_pending
      if (backlog <= config.sinkBacklogMessages || this.#interrupted(id)) return
      if (now - sink.movedAt >= config.sinkStallSeconds * 1000) {
        if (!sink.stalled) this.#opts.log.warn({ job: id, backlog }, 'the analytics sink stores nothing; the batch job sends on without waiting for it')
        sink.stalled = true
        return
      }
      await sleep(SINK_BACKLOG_POLL_MS)
    }
  }

  /** Whether the rule stage ever ran against this NATS: its durable consumers are there. */
  async #ruleStageDeployed(): Promise<boolean> {
    for await (const consumer of this.#opts.jsm.consumers.list(STREAMS.records.name)) {
      if (consumer.name.startsWith(RULE_CONSUMERS.prefix)) return true
    }
    return false
  }

  /**
   * Waits until the analytics store holds every accepted record and, when the deployment has a rule stage, it
   * decided on them all (or the decided count stalls for batch.evaluationWaitSeconds), then closes the job.
   */
  async #awaitStored(id: string, object: string): Promise<void> {
    const { jobs, config } = this.#opts
    const awaitEvaluation = await this.#ruleStageDeployed()
    let evaluatedBefore = -1
    let evaluatedMovedAt = Date.now()
    for (;;) {
      this.#checkpoint(id)
      const { stored, evaluated } = await this.#refreshCounts(id, object)
      const job = jobs.get(id) as BatchJob
      if (evaluated !== evaluatedBefore) {
        evaluatedBefore = evaluated
        evaluatedMovedAt = Date.now()
      }
      const evaluationDone = !awaitEvaluation || evaluated >= job.accepted || Date.now() - evaluatedMovedAt >= config.evaluationWaitSeconds * 1000
      if (stored >= job.accepted && evaluationDone) {
        jobs.transition(id, job.rejected > 0 ? 'completed_with_errors' : 'completed')
        this.#opts.log.info({ job: id, accepted: job.accepted, rejected: job.rejected, evaluated }, 'batch job finished')
        return
      }
      await sleep(Math.min(500, config.pollIntervalMs * 2))
    }
  }
}
