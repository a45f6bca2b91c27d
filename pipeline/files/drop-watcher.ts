import { mkdirSync, realpathSync } from 'node:fs'
import { join, relative, sep } from 'node:path'
import { type FSWatcher, watch } from 'chokidar'
import type { DropSource } from '../../storage/index.ts'
import type { Logger } from '../logger.ts'
import type { DropIntake, DropRoot } from './drop-intake.ts'
import { isTemporaryName, KEPT_FOLDERS } from './object-from-path.ts'

/** A watched directory: itself a drop root, or (SFTP) a folder of users' roots, one per user. */
export interface DropArea {
  source: DropSource
  dir: string
  perUser: boolean
}

const KEPT = new Set<string>(Object.values(KEPT_FOLDERS))
/** How often finished jobs' files are looked for, to move them to processed/ or failed/. */
const SETTLE_INTERVAL_MS = 500

export interface DropWatcherOptions {
  areas: DropArea[]
  intake: DropIntake
  /** A file is taken once unchanged for this long. */
  stableMs: number
  log: Logger
}

/**
 * Watches the drop areas (chokidar) and hands each complete file to the intake, one at a time: files already
 * there at start too, never a temporary or hidden name, never what Sluice keeps in processing/, processed/
 * and failed/. "Complete" is chokidar's awaitWriteFinish (size and time unchanged for `stableMs`), or a rename
 * from a temporary name, which is seen as a new file.
 */
export class DropWatcher {
  readonly #opts: DropWatcherOptions
  readonly #areas: DropArea[]
  readonly #queued = new Set<string>()
  #watcher?: FSWatcher
  #settleTimer?: NodeJS.Timeout
  /** Takes and settles run one after another, so two never race for one file or one name. */
  #chain: Promise<void> = Promise.resolve()

  constructor(opts: DropWatcherOptions) {
    this.#opts = opts
    this.#areas = opts.areas.map((area) => {
      mkdirSync(area.dir, { recursive: true })
      return { ...area, dir: realpathSync(area.dir) }
    })
  }

  async start(): Promise<void> {
    const { stableMs } = this.#opts
    const watcher = watch(
      this.#areas.map((a) => a.dir),
      {
        ignoreInitial: false,
        followSymlinks: false,
        awaitWriteFinish: { stabilityThreshold: stableMs, pollInterval: Math.max(10, Math.min(100, Math.floor(stableMs / 4))) },
        ignored: (path) => this.#ignored(path),
      },
    )
    this.#watcher = watcher
    watcher.on('add', (path) => this.#enqueue(path))
    watcher.on('change', (path) => this.#enqueue(path))
    watcher.on('error', (err) => this.#opts.log.error({ err }, 'drop watcher error'))
    await new Promise<void>((resolve) => watcher.once('ready', resolve))
    this.#settleTimer = setInterval(() => this.#run(() => this.#opts.intake.settleFinished()), SETTLE_INTERVAL_MS)
  }

  async stop(): Promise<void> {
    clearInterval(this.#settleTimer)
    await this.#watcher?.close()
    await this.#chain
  }

  #run(work: () => Promise<void>): void {
    this.#chain = this.#chain.then(work).catch((err) => this.#opts.log.error({ err }, 'dropped file handling failed'))
  }

  #enqueue(path: string): void {
    const root = this.#rootOf(path)
    if (!root || this.#queued.has(path)) return
    this.#queued.add(path)
    this.#run(async () => {
      this.#queued.delete(path)
      await this.#opts.intake.take(root, path)
    })
  }

  /** The drop root a path is in, or undefined when the path is an area itself or an SFTP area's user folder. */
  #rootOf(path: string): DropRoot | undefined {
    for (const area of this.#areas) {
      const inside = relative(area.dir, path)
      if (inside === '' || inside.startsWith('..')) continue
      if (!area.perUser) return { source: area.source, dir: area.dir, actor: area.source }
      const [user, ...rest] = inside.split(sep)
      return rest.length ? { source: area.source, dir: join(area.dir, user), actor: `${area.source}:${user}` } : undefined
    }
    return undefined
  }

  #ignored(path: string): boolean {
    const root = this.#rootOf(path)
    if (!root) return false
    const parts = relative(root.dir, path).split(sep)
    return KEPT.has(parts[0]) || parts.some(isTemporaryName)
  }
}
