import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import type { MetricObjectWithValues, MetricValue } from 'prom-client'
import type { RoleName, SluiceConfig } from './config.ts'
import { createLogger, type Logger } from './logger.ts'
import { inProcessRole, openContext } from './runtime.ts'

/** What a role thread reports of its metrics: prom-client's JSON form, which AggregatorRegistry merges. */
export type ThreadMetrics = MetricObjectWithValues<MetricValue<string>>[]

interface ThreadData {
  sluiceRoleThread: true
  role: RoleName
  config: SluiceConfig
  natsUrl: string
}

type ToThread = { type: 'metrics'; id: number } | { type: 'stop' }
type FromThread = { type: 'started' } | { type: 'failed'; message: string } | { type: 'metrics'; id: number; metrics: ThreadMetrics }

const RESTART_DELAY_MS = 1000
const STOP_TIMEOUT_MS = 30_000

/**
 * One role on a worker thread, with its own NATS connection, state database handle and schema cache: the role
 * exactly as another process would run it, everything between them going through NATS as it does between
 * processes. A thread that dies is started again; the role resumes from what its consumers acked.
 */
export class RoleThread {
  readonly #role: RoleName
  readonly #config: SluiceConfig
  readonly #natsUrl: string
  readonly #log: Logger
  #worker?: Worker
  #stopping = false
  #nextId = 0
  readonly #pending = new Map<number, (metrics: ThreadMetrics) => void>()

  constructor(opts: { role: RoleName; config: SluiceConfig; natsUrl: string; log: Logger }) {
    this.#role = opts.role
    this.#config = opts.config
    this.#natsUrl = opts.natsUrl
    this.#log = opts.log
  }

  /** Resolves once the role in the thread has started; rejects with why it could not. */
  start(): Promise<void> {
    const data: ThreadData = { sluiceRoleThread: true, role: this.#role, config: { ...this.#config, roles: [this.#role] }, natsUrl: this.#natsUrl }
    // The thread gets none of this one's loader flags: it registers tsx itself, however the process was started.
    const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}) })`
    // Named for debuggers and the inspector, which list the thread as `[worker N] sluice-<role>`.
    const worker = new Worker(boot, { eval: true, workerData: data, execArgv: [], name: `sluice-${this.#role}` })
    this.#worker = worker
    return new Promise((resolve, reject) => {
      let started = false
      worker.on('message', (msg: FromThread) => {
        if (msg.type === 'started') {
          started = true
          resolve()
        } else if (msg.type === 'failed') reject(new Error(`the ${this.#role} thread could not start: ${msg.message}`))
        else {
          this.#pending.get(msg.id)?.(msg.metrics)
          this.#pending.delete(msg.id)
        }
      })
      worker.on('error', (err) => this.#log.error({ err }, `${this.#role} thread failed`))
      worker.on('exit', (code) => {
        for (const answer of this.#pending.values()) answer([])
        this.#pending.clear()
        if (!started) return reject(new Error(`the ${this.#role} thread exited with code ${code} before it started`))
        if (this.#stopping) return
        this.#log.error({ code }, `${this.#role} thread exited; starting it again`)
        setTimeout(() => {
          if (!this.#stopping) this.start().catch((err) => this.#log.error({ err }, `${this.#role} thread did not start again`))
        }, RESTART_DELAY_MS)
      })
    })
  }

  /** The role's metrics, read from its thread. */
  metrics(): Promise<ThreadMetrics> {
    const worker = this.#worker
    if (!worker) return Promise.resolve([])
    const id = this.#nextId++
    return new Promise((resolve) => {
      this.#pending.set(id, resolve)
      worker.postMessage({ type: 'metrics', id } satisfies ToThread)
    })
  }

  /** The role stops as it would in its own process (finishing and acking what it took), then the thread ends. */
  async stop(): Promise<void> {
    this.#stopping = true
    const worker = this.#worker
    if (!worker) return
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()))
    worker.postMessage({ type: 'stop' } satisfies ToThread)
    const timer = setTimeout(() => void worker.terminate(), STOP_TIMEOUT_MS)
    await exited
    clearTimeout(timer)
  }
}

/** Inside the thread: the role, on a context of its own. */
async function runInThread(port: NonNullable<typeof parentPort>, { role: name, config, natsUrl }: ThreadData): Promise<void> {
  const log = createLogger(config)
  const send = (msg: FromThread) => port.postMessage(msg)
  try {
    const ctx = await openContext(config, natsUrl, log, { main: false })
    const role = inProcessRole(name, ctx, () => {})
    await role.start()
    port.on('message', async (msg: ToThread) => {
      if (msg.type === 'metrics') {
        send({ type: 'metrics', id: msg.id, metrics: (await ctx.metrics.registry.getMetricsAsJSON()) as ThreadMetrics })
        return
      }
      await role.stop()
      await ctx.close()
      // Ends this thread only.
      process.exit(0)
    })
    send({ type: 'started' })
  } catch (err) {
    log.error({ err, role: name }, 'role thread could not start')
    send({ type: 'failed', message: (err as Error).message })
    process.exit(1)
  }
}

if (!isMainThread && parentPort && (workerData as Partial<ThreadData> | undefined)?.sluiceRoleThread) await runInThread(parentPort, workerData as ThreadData)
