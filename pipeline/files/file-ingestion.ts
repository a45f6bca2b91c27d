import { join, resolve } from 'node:path'
import { type BatchJobStore, FileDropStore, type SchemaRegistry, SftpUserStore, type StateDb } from '../../storage/index.ts'
import type { SluiceConfig } from '../config.ts'
import type { Logger } from '../logger.ts'
import { DropIntake } from './drop-intake.ts'
import { DropWatcher } from './drop-watcher.ts'
import { SftpServer } from './sftp-server.ts'

/** Where flat-file ingestion keeps its things under the data dir. */
export function filesLayout(dataDir: string): { usersDir: string; hostKeyPath: string } {
  return { usersDir: join(dataDir, 'files', 'sftp'), hostKeyPath: join(dataDir, 'files', 'ssh_host_ed25519_key') }
}

export interface FileIngestionOptions {
  config: SluiceConfig
  db: StateDb
  jobs: BatchJobStore
  registry: SchemaRegistry
  log: Logger
}

/**
 * The `files` role: the SFTP server and the watcher of the drop areas (every SFTP user's folder, and the
 * configured drop dirs). Run one per data dir: two would race for the same dropped files.
 */
export class FileIngestion {
  readonly #sftp: SftpServer
  readonly #watcher: DropWatcher

  constructor(opts: FileIngestionOptions) {
    const { config, db, log } = opts
    const { usersDir, hostKeyPath } = filesLayout(config.dataDir)
    this.#sftp = new SftpServer({
      host: config.files.sftpHost,
      port: config.files.sftpPort,
      hostKeyPath,
      usersDir,
      users: new SftpUserStore(db),
      maxFileBytes: config.batch.maxBytes,
      failureDelayMs: config.files.loginFailureDelayMs,
      log,
    })
    const intake = new DropIntake({
      jobs: opts.jobs,
      drops: new FileDropStore(db),
      registry: opts.registry,
      payloadDir: join(config.dataDir, 'batches'),
      maxBytes: config.batch.maxBytes,
      log,
    })
    this.#watcher = new DropWatcher({
      areas: [
        { source: 'sftp', dir: usersDir, perUser: true },
        ...config.files.dropDirs.map((dir) => ({ source: 'dropdir' as const, dir: resolve(dir), perUser: false })),
      ],
      intake,
      stableMs: config.files.stableMs,
      log,
    })
  }

  async start(): Promise<void> {
    await this.#watcher.start()
    await this.#sftp.start()
  }

  async stop(): Promise<void> {
    await this.#sftp.stop()
    await this.#watcher.stop()
  }
}
