import { createReadStream } from 'node:fs'
import { lstat, mkdir, rename, rm } from 'node:fs/promises'
import { basename, dirname, join, relative } from 'node:path'
import { type BatchJob, BatchJobStore, type DropSource, type FileDropStore, type SchemaRegistry } from '../../storage/index.ts'
import { type StoredPayload, storePayload } from '../batch/upload.ts'
import { isSluiceError } from '../errors.ts'
import type { Logger } from '../logger.ts'
import { fileLevelError, writeErrorReport } from './error-report.ts'
import { describeDroppedFile, FORCE_SUFFIX, KEPT_FOLDERS } from './object-from-path.ts'

/** A folder files are dropped into: an SFTP user's folder, or a configured drop directory. */
export interface DropRoot {
  source: DropSource
  dir: string
  /** Who the jobs are created by, in the audit log: `sftp:<user>` or `dropdir`. */
  actor: string
}

export interface DropIntakeOptions {
  jobs: BatchJobStore
  drops: FileDropStore
  registry: SchemaRegistry
  /** Where batch payloads live (`<dataDir>/batches`). */
  payloadDir: string
  maxBytes: number
  log: Logger
}

const exists = (path: string) =>
  lstat(path).then(
    () => true,
    () => false,
  )

/** `path` if free, else `name.1.csv`, `name.2.csv`, ...: a file of the same name dropped again never overwrites one kept. */
async function freePath(path: string): Promise<string> {
  const dir = dirname(path)
  const name = basename(path)
  const dot = name.indexOf('.', 1)
  const [stem, extensions] = dot < 0 ? [name, ''] : [name.slice(0, dot), name.slice(dot)]
  let candidate = path
  for (let n = 1; await exists(candidate); n++) candidate = join(dir, `${stem}.${n}${extensions}`)
  return candidate
}

async function moveInto(from: string, to: string): Promise<void> {
  await mkdir(dirname(to), { recursive: true })
  await rename(from, to)
}

/**
 * What happens to one complete dropped file: it becomes a batch job (its content copied to the payload store,
 * the file itself held in `processing/` while the job runs), or it is refused, straight to `failed/` with a
 * `<name>.errors.csv` saying why. When its job finishes, `settleFinished` moves it to `processed/` or `failed/`,
 * with the job's error report beside it if any row was rejected.
 */
export class DropIntake {
  readonly #opts: DropIntakeOptions

  constructor(opts: DropIntakeOptions) {
    this.#opts = opts
  }

  async take(root: DropRoot, file: string): Promise<void> {
    const { drops, registry, log } = this.#opts
    const stats = await lstat(file).catch(() => undefined)
    if (!stats?.isFile()) return // gone meanwhile, or not a plain file (links are never followed)
    const path = relative(root.dir, file)
    const dropped = describeDroppedFile(path, registry.objects())
    const keptPath = join(dirname(path), dropped.name)
    const drop = { source: root.source, root: root.dir, path, object: dropped.object }
    const refuse = async (reason: string, sha256 = '') => {
      const to = await freePath(join(root.dir, KEPT_FOLDERS.failed, keptPath))
      await moveInto(file, to)
      await writeErrorReport(`${to}.errors.csv`, fileLevelError(reason))
      drops.refuse({ ...drop, sha256 }, reason, root.actor)
      log.info({ file, reason }, 'dropped file refused')
    }
    if (!dropped.format) return refuse(`${dropped.name} is not a format Sluice reads: name it .csv, .ndjson, .jsonl or .json, optionally .gz`)
    if (!dropped.object && dropped.format.format !== 'json') {
      const objects = registry.objects().join(', ')
      return refuse(`cannot tell which object ${dropped.name} holds: put it in a folder named for the object or start its name with it (${objects})`)
    }
    const { format, compressed } = dropped.format
    const jobId = BatchJobStore.newId()
    let payload: StoredPayload
    try {
      payload = await storePayload(createReadStream(file), { dir: this.#opts.payloadDir, jobId, maxBytes: this.#opts.maxBytes })
    } catch (err) {
      if (isSluiceError(err) && err.code === 'SLUICE_PAYLOAD_TOO_LARGE') return refuse(err.message)
      throw err
    }
    const earlier = drops.ingestedBefore(payload.sha256, dropped.object)
    if (earlier?.held_path && earlier.root === root.dir && earlier.path === path) {
      // The same content at the same place, its job not yet settled: Sluice stopped between making the job and
      // moving the file, or the file was dropped again meanwhile. Either way one job is enough: finish the move.
      await rm(payload.path, { force: true })
      return moveInto(file, earlier.held_path)
    }
    if (earlier && !dropped.force) {
      await rm(payload.path, { force: true })
      const where = earlier.root === root.dir ? ` from ${earlier.path}` : ''
      return refuse(
        `the same content was already ingested${where} (job ${earlier.job_id}, ${earlier.created_at}); to ingest it again, drop it with ${FORCE_SUFFIX} at the end of its name`,
        payload.sha256,
      )
    }
    const held = await freePath(join(root.dir, KEPT_FOLDERS.processing, keptPath))
    const job = drops.hold({ ...drop, sha256: payload.sha256, held_path: held }, () =>
      this.#opts.jobs.create({
        id: jobId,
        object: dropped.object,
        format,
        compressed,
        source: root.source,
        file_name: dropped.name,
        payload_path: payload.path,
        payload_bytes: payload.bytes,
        payload_sha256: payload.sha256,
        update_schema: false,
        evaluate_rules: true,
        created_by: root.actor,
      }),
    )
    await moveInto(file, held)
    log.info({ file, job: job.id, object: job.object }, 'dropped file taken as a batch job')
  }

  /** Moves the files of finished jobs out of `processing/`, each with its error report when it has one. */
  async settleFinished(): Promise<void> {
    const { drops, jobs, log } = this.#opts
    for (const drop of drops.settleable()) {
      const job = jobs.get(drop.job_id as string) as BatchJob
      const ok = job.state === 'completed' || job.state === 'completed_with_errors'
      const held = drop.held_path as string
      const to = await freePath(join(drop.root, ok ? KEPT_FOLDERS.processed : KEPT_FOLDERS.failed, relative(join(drop.root, KEPT_FOLDERS.processing), held)))
      if (await exists(held)) await moveInto(held, to)
      if (job.rejected > 0) await writeErrorReport(`${to}.errors.csv`, jobs.iterateErrors(job.id))
      else if (!ok) await writeErrorReport(`${to}.errors.csv`, fileLevelError(job.error ?? `the job was ${job.state}`))
      drops.settle(drop.id, ok ? 'processed' : 'failed', job.error)
      log.info({ file: to, job: job.id, state: job.state }, 'dropped file settled')
    }
  }
}
