import { RECORDS_PER_MESSAGE, type SchemaChange, type SchemaRegistry, type SchemaVersion } from '../storage/index.ts'
import { type Envelope, type EnvelopeMeta, envelopeJsonOf, envelopeMetaJson, newRecordId, partitionOf } from './envelope.ts'
import { type FieldError, SluiceError } from './errors.ts'
import type { RecordPublisher } from './publisher.ts'
import { dedupId } from './publisher.ts'
import { evolveSchema } from './schema-evolution.ts'
import { RECORD_PARTITIONS } from './streams.ts'
import { RecordValidator } from './validation.ts'

export interface AcceptOptions {
  /** Where the record came from: `api`, `batch`, `sftp`, ... */
  source: string
  /** Who sent it (API key id): recorded on schema versions it creates. */
  actor: string
  idempotencyKey?: string
  /** Apply the automatic schema evolution rules when the record does not fit. */
  updateSchema?: boolean
  /** false: a historical backfill, the rule stage raises no alerts for it. */
  evaluateRules?: boolean
  /** The batch job the record belongs to. */
  jobId?: string
  /** Called with the new record's id just before it is published (sync ingest starts waiting for its decision). */
  beforePublish?: (recordId: string) => void
}

/** What happened to one record: accepted (durably in JetStream) or rejected with every reason. A value, not an exception. */
export type AcceptOutcome =
  | {
      status: 'accepted'
      record_id: string
      stream_seq: number
      duplicate: boolean
      schema_version: number
      /** Set when this record's update_schema made a new version. */
      schema_changes?: SchemaChange[]
    }
  | { status: 'rejected'; code: 'SLUICE_SCHEMA_MISMATCH' | 'SLUICE_SCHEMA_INCOMPATIBLE'; schema_version: number; errors: FieldError[] }

/**
 * Most bytes of envelopes in one message of a batch: about fifty records, enough that per-message costs
 * vanish, small enough that the consumers, which pull a number of messages at a time, hold little.
 */
const BATCH_MESSAGE_BYTES = 32 * 1024

/**
 * A batch job's chunk in the making: each record is checked as it comes and, accepted, goes at once into its
 * partition's open message, which leaves as soon as it is full. No record outlives its own turn, so the garbage
 * collector frees them young: a chunk of parsed rows held whole until its end was most of what the event loop
 * promoted to the old generation (docs/performance.md).
 */
export interface RecordBatch {
  /** Checks a record; an accepted one joins its message. Returns why a rejected one is refused, or undefined. */
  add(record: unknown): Promise<FieldError[] | undefined>
  /** Records accepted so far. */
  readonly accepted: number
  /** Sends the messages still open; resolves once JetStream stored every message of the batch. */
  publish(): Promise<void>
}

/** A partition's message being filled: its envelopes, their bytes, and its place among the partition's messages. */
interface OpenMessage {
  envelopes: string[]
  bytes: number
  schemaVersion: number
  index: number
}

type Checked = Extract<AcceptOutcome, { status: 'rejected' }> | { status: 'valid'; validator: RecordValidator; schemaChanges?: SchemaChange[] }

/**
 * The one path every record takes into Sluice, whatever its source: validate against the schema on file
 * (evolving it when asked), then publish. A POST calls accept(); batch jobs (uploads, SFTP drops, upload links)
 * go through batch(), which checks each record the same way.
 */
export class RecordIngestor {
  readonly #registry: SchemaRegistry
  readonly #publisher: RecordPublisher
  readonly #onSchemaChange: (version: SchemaVersion) => Promise<void>
  readonly #validators = new Map<string, RecordValidator>()

  constructor(opts: { registry: SchemaRegistry; publisher: RecordPublisher; onSchemaChange: (version: SchemaVersion) => Promise<void> }) {
    this.#registry = opts.registry
    this.#publisher = opts.publisher
    this.#onSchemaChange = opts.onSchemaChange
  }

  /** The compiled validator of the object's current schema; throws SLUICE_UNKNOWN_OBJECT. */
  validatorFor(object: string, current = this.#registry.current(object)): RecordValidator {
    if (!current) throw new SluiceError('SLUICE_UNKNOWN_OBJECT', `there is no object type ${object}; known: ${this.#registry.objects().join(', ')}`)
    let v = this.#validators.get(object)
    if (!v || v.version !== current.version) {
      v = new RecordValidator(current)
      this.#validators.set(object, v)
    }
    return v
  }

  async accept(object: string, record: unknown, opts: AcceptOptions): Promise<AcceptOutcome> {
    const recordId = newRecordId()
    const checked = await this.#check(object, record, opts, recordId)
    if (checked.status === 'rejected') return checked
    const { validator, schemaChanges } = checked
    opts.beforePublish?.(recordId)
    const recordJson = JSON.stringify(record)
    const published = await this.#publisher.publish(
      this.#envelope(object, recordId, record, validator.version, opts, Date.now()),
      recordJson,
      dedupId(object, recordJson, opts.idempotencyKey),
      partitionOf(record as Record<string, unknown>, validator.schema.id_field, RECORD_PARTITIONS),
    )
    return { status: 'accepted', ...published, schema_version: validator.version, ...(schemaChanges && { schema_changes: schemaChanges }) }
  }

  /**
   * Records of one object, as a batch job sends them: each checked as accept() checks it, the accepted ones
   * published a partition at a time, up to RECORDS_PER_MESSAGE in a message. `batchId` names the batch: the same
   * records added again under it (a resumed job) make the same messages, which JetStream stores once.
   */
  batch(object: string, opts: AcceptOptions & { batchId: string }): RecordBatch {
    const receivedAt = Date.now()
    const maxBytes = Math.min(BATCH_MESSAGE_BYTES, this.#publisher.maxPayload() - 4096)
    const open = new Map<number, OpenMessage>()
    const stored: Promise<unknown>[] = []
    let accepted = 0
    let meta = { version: -1, json: '' }
    const send = (partition: number, message: OpenMessage) => {
      const msgId = `${object}:batch:${opts.batchId}:${partition}:${message.index}`
      const sent = this.#publisher.publishBatch(object, partition, message.envelopes, msgId, { schemaVersion: message.schemaVersion, receivedAt })
      // Its failure is thrown by publish(), which awaits them all.
      sent.catch(() => {})
      stored.push(sent)
    }
    return {
      get accepted() {
        return accepted
      },
      add: async (record) => {
        const recordId = newRecordId()
        const checked = await this.#check(object, record, opts, recordId)
        if (checked.status === 'rejected') return checked.errors
        const { validator } = checked
        // The fields all envelopes of the batch share go to JSON once per schema version, not once per record.
        if (meta.version !== validator.version)
          meta = { version: validator.version, json: envelopeMetaJson(this.#envelopeMeta(object, validator.version, opts, receivedAt)) }
        const envelope = envelopeJsonOf(meta.json, recordId, JSON.stringify(record))
        const bytes = Buffer.byteLength(envelope)
        if (bytes > maxBytes) return [{ pointer: '', message: `the record takes ${bytes} bytes as stored, over the ${maxBytes} a message can hold` }]
        const partition = partitionOf(record as Record<string, unknown>, validator.schema.id_field, RECORD_PARTITIONS)
        let message = open.get(partition)
        // A new message when the partition has none open, or its open one cannot take this record (which sends it).
        if (!message || message.envelopes.length >= RECORDS_PER_MESSAGE || message.bytes + bytes + 1 > maxBytes) {
          if (message) send(partition, message)
          message = { envelopes: [], bytes: 0, schemaVersion: 0, index: message ? message.index + 1 : 0 }
          open.set(partition, message)
        }
        message.envelopes.push(envelope)
        message.bytes += bytes + 1
        message.schemaVersion = Math.max(message.schemaVersion, validator.version)
        accepted++
        return undefined
      },
      publish: async () => {
        for (const [partition, message] of open) send(partition, message)
        open.clear()
        await Promise.all(stored)
      },
    }
  }

  /** Validates a record against the schema on file, evolving the schema first when asked and needed. */
  async #check(object: string, record: unknown, opts: AcceptOptions, recordId: string): Promise<Checked> {
    let validator = this.validatorFor(object)
    let result = validator.validate(record)
    if (!result.ok) {
      // Another process may have changed the schema since this one cached it: judge by what is on file.
      const onFile = this.#registry.refresh(object)
      if (onFile && onFile.version !== validator.version) {
        validator = this.validatorFor(object, onFile)
        result = validator.validate(record)
      }
    }
    let schemaChanges: SchemaChange[] | undefined
    if (!result.ok && opts.updateSchema) {
      let incompatible: FieldError[] | undefined
      const { version, created } = this.#registry.update(
        object,
        (current) => {
          const evolution = evolveSchema((current as SchemaVersion).schema, record)
          if (evolution.kind === 'incompatible') incompatible = evolution.errors
          return evolution.kind === 'changed' ? evolution.schema : undefined
        },
        { created_by: opts.actor, reason: 'auto', trigger_record_id: recordId },
      )
      if (incompatible) return { status: 'rejected', code: 'SLUICE_SCHEMA_INCOMPATIBLE', schema_version: version.version, errors: incompatible }
      if (created) {
        schemaChanges = version.diff
        await this.#onSchemaChange(version)
      }
      validator = this.validatorFor(object, version)
      result = validator.validate(record)
    }
    if (!result.ok) return { status: 'rejected', code: 'SLUICE_SCHEMA_MISMATCH', schema_version: validator.version, errors: result.errors }
    return { status: 'valid', validator, schemaChanges }
  }

  #envelope(object: string, recordId: string, record: unknown, schemaVersion: number, opts: AcceptOptions, receivedAt: number): Envelope {
    return { record_id: recordId, ...this.#envelopeMeta(object, schemaVersion, opts, receivedAt), record: record as Record<string, unknown> }
  }

  #envelopeMeta(object: string, schemaVersion: number, opts: AcceptOptions, receivedAt: number): EnvelopeMeta {
    return {
      object,
      received_at: receivedAt,
      source: opts.source,
      schema_version: schemaVersion,
      ...(opts.evaluateRules === false && { evaluate_rules: false }),
      ...(opts.jobId && { job_id: opts.jobId }),
    }
  }
}
