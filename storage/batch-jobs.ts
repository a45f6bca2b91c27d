import { randomBytes } from 'node:crypto'
import { recordAudit, type StateDb } from './state-db.ts'

export const JOB_STATES = ['queued', 'validating', 'processing', 'completed', 'completed_with_errors', 'failed', 'cancelled'] as const
export type JobState = (typeof JOB_STATES)[number]
export const FINAL_STATES: ReadonlySet<JobState> = new Set(['completed', 'completed_with_errors', 'failed', 'cancelled'])

/** The only moves a job may make; anything else is a bug and is refused. */
const TRANSITIONS: Record<JobState, readonly JobState[]> = {
  queued: ['validating', 'cancelled', 'failed'],
  validating: ['processing', 'failed', 'cancelled'],
  processing: ['completed', 'completed_with_errors', 'failed', 'cancelled'],
  completed: [],
  completed_with_errors: [],
  failed: [],
  cancelled: [],
}

export type PayloadFormat = 'json' | 'ndjson' | 'csv'

export interface BatchJob {
  id: string
  object: string | null
  state: JobState
  format: PayloadFormat
  compressed: boolean
  source: string
  file_name: string | null
  payload_path: string
  payload_bytes: number
  payload_sha256: string
  idempotency_key: string | null
  update_schema: boolean
  evaluate_rules: boolean
  created_by: string
  total: number | null
  accepted: number
  rejected: number
  stored: number
  evaluated: number
  /** Rows before this one are published or rejected: where a restarted job resumes. */
  checkpoint_row: number
  cancel_requested: boolean
  error: string | null
  created_at: string
  queued_at: string | null
  validating_at: string | null
  processing_at: string | null
  finished_at: string | null
}

/** One rejected row's problem: a row may have several. */
export interface RowError {
  /** 1-based: the record's position in the payload (for CSV, the data row, the header not counted). */
  row: number
  /** The record's own id (its schema id field), when it has one. */
  record_key: string | null
  pointer: string
  message: string
}

const BOOLEAN_COLUMNS = ['compressed', 'update_schema', 'evaluate_rules', 'cancel_requested'] as const
function toJob(row: Record<string, unknown>): BatchJob {
  const job = { ...row } as Record<string, unknown>
  for (const c of BOOLEAN_COLUMNS) job[c] = row[c] === 1
  delete job.worker_id
  delete job.lease_until
  return job as unknown as BatchJob
}

export class JobTransitionError extends Error {}

/** Batch jobs and their per-row errors, in SQLite. */
export class BatchJobStore {
  readonly #db: StateDb

  constructor(db: StateDb) {
    this.#db = db
  }

  create(job: {
    object: string | null
    format: PayloadFormat
    compressed: boolean
    source: string
    file_name?: string
    payload_path: string
    payload_bytes: number
    payload_sha256: string
    idempotency_key?: string
    update_schema: boolean
    evaluate_rules: boolean
    created_by: string
    id?: string
  }): BatchJob {
    const now = new Date().toISOString()
    const id = job.id ?? BatchJobStore.newId()
    this.#db.transaction(() => {
      this.#db
        .prepare(
          `INSERT INTO batch_jobs (id, object, state, format, compressed, source, file_name, payload_path, payload_bytes, payload_sha256,
             idempotency_key, update_schema, evaluate_rules, created_by, created_at, queued_at)
           VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          id,
          job.object,
          job.format,
          job.compressed ? 1 : 0,
          job.source,
          job.file_name ?? null,
          job.payload_path,
          job.payload_bytes,
          job.payload_sha256,
          job.idempotency_key ?? null,
          job.update_schema ? 1 : 0,
          job.evaluate_rules ? 1 : 0,
          job.created_by,
          now,
          now,
        )
      recordAudit(this.#db, {
        actor: job.created_by,
        action: 'batch.create',
        target: id,
        detail: { object: job.object, source: job.source, file_name: job.file_name, bytes: job.payload_bytes },
      })
    })()
    return this.get(id) as BatchJob
  }

  /** Job ids are random, and the payload file is named for them. */
  static newId(): string {
    return `job_${randomBytes(9).toString('base64url')}`
  }

  get(id: string): BatchJob | undefined {
    const row = this.#db.prepare('SELECT * FROM batch_jobs WHERE id = ?').get(id) as Record<string, unknown> | undefined
    return row && toJob(row)
  }

  byIdempotencyKey(key: string): BatchJob | undefined {
    const row = this.#db.prepare('SELECT * FROM batch_jobs WHERE idempotency_key = ?').get(key) as Record<string, unknown> | undefined
    return row && toJob(row)
  }

  list(filter: { state?: JobState; object?: string; limit: number }): BatchJob[] {
    const where: string[] = []
    const params: unknown[] = []
    if (filter.state) {
      where.push('state = ?')
      params.push(filter.state)
    }
    if (filter.object) {
      where.push('object = ?')
      params.push(filter.object)
    }
    const sql = `SELECT * FROM batch_jobs ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`
    return (this.#db.prepare(sql).all(...params, filter.limit) as Record<string, unknown>[]).map(toJob)
  }

  /**
   * Takes the oldest job that is queued, or unfinished with an expired lease (its worker died), for
   * `workerId` until `leaseMs` from now. One UPDATE, so two workers never take the same job.
   */
  claim(workerId: string, leaseMs: number, now = Date.now()): BatchJob | undefined {
    const row = this.#db
      .prepare(
        `UPDATE batch_jobs SET worker_id = ?, lease_until = ?
         WHERE id = (SELECT id FROM batch_jobs
                     WHERE state IN ('queued', 'validating', 'processing') AND (lease_until IS NULL OR lease_until < ?)
                     ORDER BY created_at LIMIT 1)
         RETURNING *`,
      )
      .get(workerId, now + leaseMs, now) as Record<string, unknown> | undefined
    return row && toJob(row)
  }

  /** Extends the lease; false when another worker took the job over meanwhile. */
  renewLease(id: string, workerId: string, leaseMs: number, now = Date.now()): boolean {
    return this.#db.prepare('UPDATE batch_jobs SET lease_until = ? WHERE id = ? AND worker_id = ?').run(now + leaseMs, id, workerId).changes > 0
  }

  /** Moves a job to `to`, setting that state's timestamp; throws on a move the state machine does not allow. */
  transition(
    id: string,
    to: JobState,
    fields: { error?: string; object?: string; total?: number; update_schema?: boolean; evaluate_rules?: boolean } = {},
  ): BatchJob {
    return this.#db.transaction(() => {
      const job = this.get(id)
      if (!job) throw new JobTransitionError(`no job ${id}`)
      if (!TRANSITIONS[job.state].includes(to)) throw new JobTransitionError(`job ${id} cannot go from ${job.state} to ${to}`)
      const now = new Date().toISOString()
      const stamp = FINAL_STATES.has(to) ? 'finished_at' : `${to}_at`
      const sets = ['state = @to', `${stamp} = @now`]
      const params: Record<string, unknown> = { id, to, now }
      for (const [k, v] of Object.entries(fields)) {
        if (v === undefined) continue
        sets.push(`${k} = @${k}`)
        params[k] = typeof v === 'boolean' ? (v ? 1 : 0) : v
      }
      if (FINAL_STATES.has(to)) sets.push('lease_until = NULL')
      this.#db.prepare(`UPDATE batch_jobs SET ${sets.join(', ')} WHERE id = @id`).run(params)
      return this.get(id) as BatchJob
    })()
  }

  /**
   * Records one processed chunk at once: counters, the rejected rows, and the new checkpoint. Only for the worker
   * holding the job, and only past the checkpoint: false, and nothing noted, when another worker took the job over
   * (it makes the same chunk again) or the chunk was noted before.
   */
  recordChunk(id: string, workerId: string, chunk: { accepted: number; rejected: number; errors: RowError[]; checkpoint_row: number }): boolean {
    return this.#db.transaction(() => {
      const noted = this.#db
        .prepare(
          'UPDATE batch_jobs SET accepted = accepted + ?, rejected = rejected + ?, checkpoint_row = ? WHERE id = ? AND worker_id = ? AND checkpoint_row < ?',
        )
        .run(chunk.accepted, chunk.rejected, chunk.checkpoint_row, id, workerId, chunk.checkpoint_row)
      if (noted.changes === 0) return false
      const insert = this.#db.prepare('INSERT INTO batch_errors (job_id, row, record_key, pointer, message) VALUES (?, ?, ?, ?, ?)')
      for (const e of chunk.errors) insert.run(id, e.row, e.record_key, e.pointer, e.message)
      return true
    })()
  }

  /** A resumed job first forgets what it counted past its checkpoint (that chunk is processed again). */
  rewindToCheckpoint(id: string): void {
    this.#db.prepare('DELETE FROM batch_errors WHERE job_id = ? AND row > (SELECT checkpoint_row FROM batch_jobs WHERE id = ?)').run(id, id)
  }

  setProgress(id: string, fields: { stored?: number; evaluated?: number }): void {
    for (const [k, v] of Object.entries(fields)) if (v !== undefined) this.#db.prepare(`UPDATE batch_jobs SET ${k} = ? WHERE id = ?`).run(v, id)
  }

  /** Asks for cancellation; a queued job is cancelled at once, a running one by its worker between chunks. */
  requestCancel(id: string, actor: string): BatchJob | undefined {
    return this.#db.transaction(() => {
      const job = this.get(id)
      if (!job || FINAL_STATES.has(job.state)) return job
      this.#db.prepare('UPDATE batch_jobs SET cancel_requested = 1 WHERE id = ?').run(id)
      recordAudit(this.#db, { actor, action: 'batch.cancel', target: id })
      return job.state === 'queued' ? this.transition(id, 'cancelled') : (this.get(id) as BatchJob)
    })()
  }

  firstErrors(id: string, limit: number): RowError[] {
    return this.#db
      .prepare('SELECT row, record_key, pointer, message FROM batch_errors WHERE job_id = ? ORDER BY row, rowid LIMIT ?')
      .all(id, limit) as RowError[]
  }

  /** Every error of a job, in row order, without loading them all. */
  iterateErrors(id: string): IterableIterator<RowError> {
    return this.#db
      .prepare('SELECT row, record_key, pointer, message FROM batch_errors WHERE job_id = ? ORDER BY row, rowid')
      .iterate(id) as IterableIterator<RowError>
  }
}
