import type { BatchJob, JobState } from './batch-jobs.ts'
import { recordAudit, type StateDb } from './state-db.ts'

/** Where a dropped file comes from: an SFTP user's folder or a configured drop directory. */
export type DropSource = 'sftp' | 'dropdir'

/** A file taken from a drop root, and what became of it. */
export interface FileDrop {
  id: number
  source: DropSource
  /** The drop root (absolute path) and the file's path inside it, as dropped. */
  root: string
  path: string
  sha256: string
  object: string | null
  job_id: string | null
  /** Where the file waits while its job runs; null once settled. */
  held_path: string | null
  outcome: 'processed' | 'failed' | null
  detail: string | null
  created_at: string
  settled_at: string | null
}

/** A drop with the state of its job. */
export type FileDropWithJob = FileDrop & { job_state: JobState }

const FINAL = "('completed', 'completed_with_errors', 'failed', 'cancelled')"

/** Dropped files in SQLite: the content hash that keeps a file from being ingested twice, and each file's fate. */
export class FileDropStore {
  readonly #db: StateDb

  constructor(db: StateDb) {
    this.#db = db
  }

  /**
   * Makes the job (`createJob`) and records the drop that waits for it in one transaction: a crash leaves
   * either both or neither, so the file is taken exactly once.
   */
  hold(drop: Pick<FileDrop, 'source' | 'root' | 'path' | 'sha256' | 'object' | 'held_path'>, createJob: () => BatchJob): BatchJob {
    return this.#db.transaction(() => {
      const job = createJob()
      this.#db
        .prepare('INSERT INTO file_drops (source, root, path, sha256, object, job_id, held_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(drop.source, drop.root, drop.path, drop.sha256, drop.object, job.id, drop.held_path, new Date().toISOString())
      return job
    })()
  }

  /** Records a file that was not ingested (duplicate, unknown format or object), settled at once, with why. */
  refuse(drop: Pick<FileDrop, 'source' | 'root' | 'path' | 'sha256' | 'object'>, reason: string, actor: string): void {
    const now = new Date().toISOString()
    this.#db.transaction(() => {
      this.#db
        .prepare(
          `INSERT INTO file_drops (source, root, path, sha256, object, outcome, detail, created_at, settled_at)
           VALUES (?, ?, ?, ?, ?, 'failed', ?, ?, ?)`,
        )
        .run(drop.source, drop.root, drop.path, drop.sha256, drop.object, reason, now, now)
      recordAudit(this.#db, { actor, action: 'files.refused', target: drop.path, detail: { source: drop.source, reason } })
    })()
  }

  /** The first drop of this content for this object whose job has not failed or been cancelled: it was (or is being) ingested. */
  ingestedBefore(sha256: string, object: string | null): FileDropWithJob | undefined {
    return this.#db
      .prepare(
        `SELECT d.*, j.state AS job_state FROM file_drops d JOIN batch_jobs j ON j.id = d.job_id
         WHERE d.sha256 = ? AND d.object IS ? AND j.state NOT IN ('failed', 'cancelled') ORDER BY d.id LIMIT 1`,
      )
      .get(sha256, object) as FileDropWithJob | undefined
  }

  /** Drops whose job has finished and whose file has not yet been moved to processed/ or failed/. */
  settleable(): FileDropWithJob[] {
    return this.#db
      .prepare(
        `SELECT d.*, j.state AS job_state FROM file_drops d JOIN batch_jobs j ON j.id = d.job_id
         WHERE d.settled_at IS NULL AND j.state IN ${FINAL} ORDER BY d.id`,
      )
      .all() as FileDropWithJob[]
  }

  settle(id: number, outcome: 'processed' | 'failed', detail: string | null): void {
    this.#db
      .prepare('UPDATE file_drops SET outcome = ?, detail = ?, held_path = NULL, settled_at = ? WHERE id = ?')
      .run(outcome, detail, new Date().toISOString(), id)
  }
}
