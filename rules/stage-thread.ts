import { join } from 'node:path'
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { type MetricObjectWithValues, type MetricValue, Registry } from 'prom-client'
import type { SluiceConfig } from '../pipeline/config.ts'
import { createLogger, type Logger } from '../pipeline/logger.ts'
import { connectNats } from '../pipeline/nats-connection.ts'
import { onSchemaChange } from '../pipeline/schema-events.ts'
import { openStateDb, RuleStore, SchemaRegistry } from '../storage/index.ts'
import { RuleStage } from './stage.ts'

/** What the rule stage's thread reports of its metrics: prom-client's JSON form, which AggregatorRegistry merges. */
export type ThreadMetrics = MetricObjectWithValues<MetricValue<string>>[]

interface ThreadData {
  sluiceRuleStage: true
  config: SluiceConfig
  natsUrl: string
}

type ToThread = { type: 'metrics'; id: number } | { type: 'stop' }
type FromThread = { type: 'started' } | { type: 'failed'; message: string } | { type: 'metrics'; id: number; metrics: ThreadMetrics }

const RESTART_DELAY_MS = 1000
const STOP_TIMEOUT_MS = 30_000

/**
 * The rule stage on a thread of its own, with its own NATS connection and state database handle, as if it were a
 * separate process: evaluating a batch job's million records then takes the second core instead of the event
 * loop that ingress, the batch worker and the sink share (docs/performance.md). A thread that dies is started
 * again; the stage resumes from what its consumers acked.
 */
export class RuleStageThread {
  readonly #config: SluiceConfig
  readonly #natsUrl: string
  readonly #log: Logger
  #worker?: Worker
  #stopping = false
  #nextId = 0
  readonly #pending = new Map<number, (metrics: ThreadMetrics) => void>()

  constructor(opts: { config: SluiceConfig; natsUrl: string; log: Logger }) {
    this.#config = opts.config
    this.#natsUrl = opts.natsUrl
    this.#log = opts.log
  }

  /** Resolves once the stage in the thread has started (its state rebuilt); rejects with why it could not. */
  start(): Promise<void> {
    const data: ThreadData = { sluiceRuleStage: true, config: this.#config, natsUrl: this.#natsUrl }
    // The thread gets no loader flags of this one: it registers tsx itself, however the process was started.
    const boot = `import(${JSON.stringify(import.meta.resolve('tsx/esm/api'))}).then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}) })`
    const worker = new Worker(boot, { eval: true, workerData: data, execArgv: [] })
    this.#worker = worker
    return new Promise((resolve, reject) => {
      let started = false
      worker.on('message', (msg: FromThread) => {
        if (msg.type === 'started') {
          started = true
          resolve()
        } else if (msg.type === 'failed') reject(new Error(`the rule stage thread could not start: ${msg.message}`))
        else if (msg.type === 'metrics') {
          this.#pending.get(msg.id)?.(msg.metrics)
          this.#pending.delete(msg.id)
        }
      })
      worker.on('error', (err) => this.#log.error({ err }, 'rule stage thread failed'))
      worker.on('exit', (code) => {
        for (const answer of this.#pending.values()) answer([])
        this.#pending.clear()
        if (!started) return reject(new Error(`the rule stage thread exited with code ${code} before it started`))
        if (this.#stopping) return
        this.#log.error({ code }, 'rule stage thread exited; starting it again')
        setTimeout(() => {
          if (!this.#stopping) this.start().catch((err) => this.#log.error({ err }, 'rule stage thread did not start again'))
        }, RESTART_DELAY_MS)
      })
    })
  }

  /** The stage's metrics, read from its thread. */
  metrics(): Promise<ThreadMetrics> {
    const worker = this.#worker
    if (!worker) return Promise.resolve([])
    const id = this.#nextId++
    return new Promise((resolve) => {
      this.#pending.set(id, resolve)
      worker.postMessage({ type: 'metrics', id } satisfies ToThread)
    })
  }

  /** The stage finishes and acks what it took, then the thread ends (or is ended, if it does not in time). */
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

/** Inside the thread: the stage, its own connection, database handle, schema cache and metrics. */
async function runInThread(port: NonNullable<typeof parentPort>, { config, natsUrl }: ThreadData): Promise<void> {
  const log = createLogger(config).child({ role: 'rules' })
  const send = (msg: FromThread) => port.postMessage(msg)
  try {
    const nats = await connectNats(natsUrl, log, 'sluice-rules')
    const db = openStateDb(join(config.dataDir, 'state.db'))
    const registry = new SchemaRegistry(db)
    const schemaWatch = onSchemaChange(nats.nc, log, (version) => void registry.refresh(version.object))
    const metrics = new Registry()
    const stage = new RuleStage({
      nc: nats.nc,
      js: jetstream(nats.nc),
      jsm: await jetstreamManager(nats.nc),
      registry,
      rules: new RuleStore(db),
      metrics,
      log,
      config: config.rules,
    })
    await stage.start()
    port.on('message', async (msg: ToThread) => {
      if (msg.type === 'metrics') send({ type: 'metrics', id: msg.id, metrics: (await metrics.getMetricsAsJSON()) as ThreadMetrics })
      else {
        await stage.stop()
        schemaWatch.unsubscribe()
        await nats.close()
        db.close()
        // Ends this thread only.
        process.exit(0)
      }
    })
    send({ type: 'started' })
  } catch (err) {
    log.error({ err }, 'rule stage thread could not start')
    send({ type: 'failed', message: (err as Error).message })
    process.exit(1)
  }
}

if (!isMainThread && parentPort && (workerData as Partial<ThreadData> | undefined)?.sluiceRuleStage) await runInThread(parentPort, workerData as ThreadData)
