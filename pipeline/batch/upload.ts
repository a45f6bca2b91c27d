import { createHash } from 'node:crypto'
import { createWriteStream, mkdirSync } from 'node:fs'
import { rm } from 'node:fs/promises'
import { join } from 'node:path'
import { type Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { BatchJob, BatchJobStore, PayloadFormat } from '../../storage/index.ts'
import { SluiceError } from '../errors.ts'

/** What a stored upload is: where, how big, its digest. */
export interface StoredPayload {
  path: string
  bytes: number
  sha256: string
}

/** The payload format of a content type, or undefined when Sluice does not take it. */
export function payloadFormatOf(contentType: string | undefined): PayloadFormat | undefined {
  const type = contentType?.split(';')[0].trim().toLowerCase()
  if (type === 'application/json') return 'json'
  if (type === 'application/x-ndjson' || type === 'application/jsonl' || type === 'application/jsonlines') return 'ndjson'
  if (type === 'text/csv') return 'csv'
  return undefined
}

const FILE_EXTENSIONS: Record<string, PayloadFormat> = { csv: 'csv', ndjson: 'ndjson', jsonl: 'ndjson', json: 'json' }

/** The payload format of a file, from its name: `.csv`, `.ndjson` or `.jsonl`, `.json`, each optionally `.gz`. */
export function payloadFormatOfFileName(name: string): { format: PayloadFormat; compressed: boolean } | undefined {
  const match = /\.(csv|ndjson|jsonl|json)(\.gz)?$/i.exec(name)
  return match ? { format: FILE_EXTENSIONS[match[1].toLowerCase()], compressed: match[2] !== undefined } : undefined
}

/**
 * Streams an upload to `<dataDir>/batches/<jobId>`, hashing and counting as it goes, and fsyncs it before
 * returning: only then may the client be told the job exists. Past `maxBytes` it stops, removes the file and
 * throws 413; nothing is ever held whole in memory.
 */
export async function storePayload(body: Readable, opts: { dir: string; jobId: string; maxBytes: number }): Promise<StoredPayload> {
  mkdirSync(opts.dir, { recursive: true })
  const path = join(opts.dir, opts.jobId)
  const hash = createHash('sha256')
  let bytes = 0
  const meter = new Transform({
    transform(chunk: Buffer, _enc, done) {
      bytes += chunk.length
      if (bytes > opts.maxBytes) return done(new SluiceError('SLUICE_PAYLOAD_TOO_LARGE', `the upload is larger than the limit of ${opts.maxBytes} bytes`))
      hash.update(chunk)
      done(null, chunk)
    },
  })
  const file = createWriteStream(path, { flush: true })
  try {
    await pipeline(body, meter, file)
  } catch (err) {
    await rm(path, { force: true })
    throw err
  }
  return { path, bytes, sha256: hash.digest('hex') }
}

/**
 * Creates the job for a stored payload. With an Idempotency-Key: the same key and the same payload give back
 * the job made the first time (its payload copy is dropped); the same key with another payload is a 409.
 */
export async function createJobForPayload(
  jobs: BatchJobStore,
  payload: StoredPayload,
  job: Omit<Parameters<BatchJobStore['create']>[0], 'payload_path' | 'payload_bytes' | 'payload_sha256'> & { id: string },
): Promise<{ job: BatchJob; existing: boolean }> {
  const previous = job.idempotency_key ? jobs.byIdempotencyKey(job.idempotency_key) : undefined
  if (previous) {
    await rm(payload.path, { force: true })
    if (previous.payload_sha256 !== payload.sha256) {
      throw new SluiceError('SLUICE_IDEMPOTENCY_CONFLICT', `Idempotency-Key ${job.idempotency_key} was used for another payload (job ${previous.id})`)
    }
    return { job: previous, existing: true }
  }
  try {
    return { job: jobs.create({ ...job, payload_path: payload.path, payload_bytes: payload.bytes, payload_sha256: payload.sha256 }), existing: false }
  } catch (err) {
    // Two uploads with one key at the same moment: the other one won; answer as for a retry.
    if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' && job.idempotency_key) return createJobForPayload(jobs, payload, job)
    throw err
  }
}
