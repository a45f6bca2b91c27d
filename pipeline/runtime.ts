import { rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { type JetStreamClient, type JetStreamManager, jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { Subscription } from '@nats-io/transport-node'
import { loadDefaultRules, RuleStage } from '../rules/index.ts'
import {
  AnalyticsStore,
  ApiKeyStore,
  BatchJobStore,
  openStateDb,
  RuleOutcomeStore,
  RuleStore,
  SchemaRegistry,
  SessionStore,
  SftpUserStore,
  type StateDb,
  UploadLinkStore,
} from '../storage/index.ts'
import { BatchWorker } from './batch/worker.ts'
import type { RoleName, SluiceConfig } from './config.ts'
import { FileIngestion } from './files/index.ts'
import { RecordIngestor } from './ingest.ts'
import { buildIngressApp, type ReadinessReport } from './ingress/app.ts'
import { ruleApi } from './ingress/rule-routes.ts'
import { createLogger, type Logger } from './logger.ts'
import { createMetrics, type Metrics } from './metrics.ts'
import { connectNats, type SluiceNats } from './nats-connection.ts'
import { type EmbeddedNatsServer, startNatsServer } from './nats-server.ts'
import { RecordPublisher } from './publisher.ts'
import { QueryClient, serveQueries } from './query.ts'
import { RoleThread } from './role-thread.ts'
import { onSchemaChange, publishSchemaChange } from './schema-events.ts'
import { AnalyticsSink } from './sink/analytics-sink.ts'
import { RuleOutcomeSink } from './sink/rule-outcome-sink.ts'
import { CONSUMERS, STREAMS } from './streams.ts'
import { ensureTopology, resumeSinkConsumer } from './topology.ts'

export const DEFAULT_SCHEMAS_DIR = fileURLToPath(new URL('../fixtures/schemas', import.meta.url))
/** Where `sluice serve` notes its embedded nats-server's URL in the data dir, for the CLI commands that need NATS. */
export const EMBEDDED_NATS_URL_FILE = 'nats.url'

/** A unit of the pipeline `sluice serve` can run; it never assumes another role runs in the same process. */
export interface Role {
  readonly name: RoleName
  start(): Promise<void>
  stop(): Promise<void>
}

/** What every role of one process (or of one role thread) shares. */
interface RuntimeContext {
  config: SluiceConfig
  log: Logger
  nats: SluiceNats
  js: JetStreamClient
  jsm: JetStreamManager
  db: StateDb
  registry: SchemaRegistry
  keys: ApiKeyStore
  metrics: Metrics
  /** The one path records take in, shared by the roles that accept records (ingress, batch). */
  ingestor: RecordIngestor
  jobs: BatchJobStore
  rules: RuleStore
  /** Queries to whichever process owns the analytics store. */
  queries: QueryClient
}

export interface RunningSluice {
  readonly config: SluiceConfig
  readonly natsUrl: string
  /** Base URL of the HTTP API, when this process runs ingress. */
  readonly httpUrl?: string
  /** The admin key generated on this first start, if one was (printed once, never stored in clear). */
  readonly generatedAdminKey?: string
  stop(): Promise<void>
}

async function readiness(ctx: RuntimeContext): Promise<ReadinessReport> {
  const checks: ReadinessReport['checks'] = { nats: { ok: ctx.nats.connected() } }
  try {
    for (const s of Object.values(STREAMS)) await ctx.jsm.streams.info(s.name)
    checks.streams = { ok: true }
    const sink = await ctx.jsm.consumers.info(CONSUMERS.analyticsSink.stream, CONSUMERS.analyticsSink.durable)
    const lag = sink.num_pending + sink.num_ack_pending
    checks.sink_lag = { ok: lag <= ctx.config.sink.maxReadyLag, detail: lag }
  } catch (err) {
    checks.streams = { ok: false, detail: (err as Error).message }
  }
  return { ready: Object.values(checks).every((c) => c.ok), checks }
}

function ingressRole(ctx: RuntimeContext, onListen: (url: string) => void): Role {
  let app: Awaited<ReturnType<typeof buildIngressApp>> | undefined
  return {
    name: 'ingress',
    async start() {
      app = await buildIngressApp({
        config: ctx.config,
        log: ctx.log,
        registry: ctx.registry,
        keys: ctx.keys,
        metrics: ctx.metrics,
        ingestor: ctx.ingestor,
        publishSchemaChange: (version) => publishSchemaChange(ctx.js, version),
        queries: ctx.queries,
        jobs: ctx.jobs,
        links: new UploadLinkStore(ctx.db),
        sftpUsers: new SftpUserStore(ctx.db),
        rules: ruleApi({ store: ctx.rules, nc: ctx.nats.nc, config: ctx.config }),
        dashboard: { sessions: new SessionStore(ctx.db), nc: ctx.nats.nc, jsm: ctx.jsm },
        readiness: () => readiness(ctx),
      })
      const address = await app.listen({ host: ctx.config.http.host, port: ctx.config.http.port })
      onListen(address)
    },
    // fastify's close stops accepting and waits for in-flight requests to be answered.
    stop: async () => app?.close(),
  }
}

function batchRole(ctx: RuntimeContext): Role {
  const worker = new BatchWorker({
    jobs: ctx.jobs,
    registry: ctx.registry,
    ingestor: ctx.ingestor,
    queries: ctx.queries,
    jsm: ctx.jsm,
    log: ctx.log.child({ role: 'batch' }),
    config: ctx.config.batch,
  })
  return { name: 'batch', start: async () => worker.start(), stop: () => worker.stop() }
}

function filesRole(ctx: RuntimeContext): Role {
  const files = new FileIngestion({ config: ctx.config, db: ctx.db, jobs: ctx.jobs, registry: ctx.registry, log: ctx.log.child({ role: 'files' }) })
  return { name: 'files', start: () => files.start(), stop: () => files.stop() }
}

function rulesRole(ctx: RuntimeContext): Role {
  const stage = new RuleStage({
    nc: ctx.nats.nc,
    js: ctx.js,
    jsm: ctx.jsm,
    registry: ctx.registry,
    rules: ctx.rules,
    metrics: ctx.metrics.registry,
    log: ctx.log.child({ role: 'rules' }),
    config: ctx.config.rules,
  })
  return { name: 'rules', start: () => stage.start(), stop: () => stage.stop() }
}

function sinkRole(ctx: RuntimeContext): Role {
  let store: AnalyticsStore | undefined
  let sink: AnalyticsSink | undefined
  let outcomes: RuleOutcomeStore | undefined
  let outcomeSink: RuleOutcomeSink | undefined
  let subs: ReturnType<typeof serveQueries> = []
  return {
    name: 'sink',
    async start() {
      for (const consumer of [CONSUMERS.analyticsSink, CONSUMERS.ruleOutcomeSink]) await resumeSinkConsumer(ctx.jsm, consumer, ctx.config)
      const log = ctx.log.child({ role: 'sink' })
      let parameterWriteLoggedAt = 0
      store = await AnalyticsStore.open(join(ctx.config.dataDir, 'analytics.duckdb'), {
        checkpointThresholdMb: ctx.config.sink.checkpointThresholdMb,
        memoryLimitMb: ctx.config.sink.memoryLimitMb,
        onParameterWrite: (err) => {
          ctx.metrics.sinkParameterWrites.inc()
          // At most a line a minute: an unreadable append file would make every write say so.
          if (Date.now() - parameterWriteLoggedAt < 60_000) return
          parameterWriteLoggedAt = Date.now()
          log.warn(
            { err },
            'analytics sink: DuckDB could not read a write from the append file; it was made from a parameter (sluice_sink_parameter_writes_total counts them)',
          )
        },
      })
      sink = new AnalyticsSink({
        js: ctx.js,
        store,
        registry: ctx.registry,
        metrics: ctx.metrics,
        log,
        batchSize: ctx.config.sink.batchSize,
        flushIntervalMs: ctx.config.sink.flushIntervalMs,
      })
      await sink.start()
      outcomes = await RuleOutcomeStore.open(store)
      outcomeSink = new RuleOutcomeSink({
        js: ctx.js,
        store: outcomes,
        log,
        batchSize: ctx.config.sink.decisionBatchSize,
        flushIntervalMs: ctx.config.sink.flushIntervalMs,
      })
      await outcomeSink.start()
      const activeSink = sink
      subs = [...serveQueries(ctx.nats.nc, store, log, outcomes), onSchemaChange(ctx.nats.nc, log, (version) => activeSink.schemaChanged(version))]
    },
    async stop() {
      for (const s of subs) s.unsubscribe()
      await sink?.stop()
      await outcomeSink?.stop()
      outcomes?.close()
      store?.close()
    },
  }
}

/** Makes the admin key on the very first start: SLUICE_ADMIN_KEY if set, else a generated one returned to print. */
function bootstrapAdminKey(ctx: RuntimeContext): string | undefined {
  if (ctx.keys.any()) return undefined
  const { key } = ctx.keys.create({ name: 'admin', scopes: ['admin'], secret: ctx.config.adminKey, actor: 'system' })
  return ctx.config.adminKey ? undefined : key
}

/** The roles' shared context, and how to close it. */
type OpenContext = RuntimeContext & { close(): Promise<void> }

/**
 * Connects to NATS and opens what roles share. The process's main thread (`main`) also makes the topology and
 * loads the default schemas and rules; a role thread finds them there.
 */
export async function openContext(config: SluiceConfig, natsUrl: string, log: Logger, opts: { main: boolean }): Promise<OpenContext> {
  let nats: SluiceNats | undefined
  let db: StateDb | undefined
  let schemaWatch: Subscription | undefined
  let publisher: RecordPublisher | undefined
  const close = async () => {
    schemaWatch?.unsubscribe()
    publisher?.close()
    await nats?.close()
    db?.close()
  }
  try {
    nats = await connectNats(natsUrl, log, opts.main ? 'sluice' : `sluice-${config.roles.join('-')}`)
    const jsm = await jetstreamManager(nats.nc)
    if (opts.main) await ensureTopology(jsm, config)
    db = openStateDb(join(config.dataDir, 'state.db'))
    const registry = new SchemaRegistry(db)
    const rules = new RuleStore(db)
    if (opts.main) {
      registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
      loadDefaultRules(rules, { registry, retentionDays: config.streams.recordRetentionDays })
    }
    const js = jetstream(nats.nc)
    publisher = new RecordPublisher(nats, jsm, { timeoutMs: config.http.publishTimeoutMs, retryAfterSeconds: config.http.retryAfterSeconds })
    // A version made by another process or thread: drop the cached one, so the next record is judged by what is on file.
    schemaWatch = onSchemaChange(nats.nc, log, (version) => void registry.refresh(version.object))
    return {
      config,
      log,
      nats,
      js,
      jsm,
      db,
      registry,
      keys: new ApiKeyStore(db),
      jobs: new BatchJobStore(db),
      rules,
      metrics: createMetrics({ processMetrics: opts.main }),
      ingestor: new RecordIngestor({ registry, publisher, onSchemaChange: (version) => publishSchemaChange(js, version) }),
      queries: new QueryClient(nats.nc, config.http.queryTimeoutMs),
      close,
    }
  } catch (err) {
    await close()
    throw err
  }
}

/** A role run in this thread. */
export function inProcessRole(name: RoleName, ctx: RuntimeContext, onListen: (url: string) => void): Role {
  switch (name) {
    case 'sink':
      return sinkRole(ctx)
    case 'ingress':
      return ingressRole(ctx, onListen)
    case 'batch':
      return batchRole(ctx)
    case 'rules':
      return rulesRole(ctx)
    case 'files':
      return filesRole(ctx)
  }
}

/**
 * Roles that get a worker thread of their own when `sluice serve` runs them beside others. The rule stage's
 * evaluation of a batch job then takes the second core instead of the event loop the other roles share. The sink
 * on a thread too was measured and left out: 8% faster for a million-record job, for 310 MB more at peak (README, Threads).
 */
const THREADED_ROLES: ReadonlySet<RoleName> = new Set(['rules'])

/** A role on a worker thread of its own; `/metrics` reads the thread's metrics while it runs. */
function threadRole(name: RoleName, ctx: RuntimeContext, natsUrl: string): Role {
  const thread = new RoleThread({ role: name, config: ctx.config, natsUrl, log: ctx.log.child({ role: name }) })
  const readMetrics = () => thread.metrics()
  return {
    name,
    async start() {
      await thread.start()
      ctx.metrics.threads.add(readMetrics)
    },
    async stop() {
      ctx.metrics.threads.delete(readMetrics)
      await thread.stop()
    },
  }
}

/**
 * Starts the roles the config names, in one process: connects to NATS (spawning nats-server when no
 * NATS_URL is set), creates the topology, opens the state database, then starts each role.
 */
export async function startSluice(config: SluiceConfig, opts: { log?: Logger } = {}): Promise<RunningSluice> {
  const log = opts.log ?? createLogger(config)
  let embedded: EmbeddedNatsServer | undefined
  if (!config.natsUrl) {
    embedded = await startNatsServer({ storeDir: join(config.dataDir, 'nats'), ...config.embeddedNats })
    log.info({ url: embedded.url }, 'embedded nats-server started')
  }
  const natsUrl = config.natsUrl ?? (embedded as EmbeddedNatsServer).url
  const started: Role[] = []
  let ctx: OpenContext | undefined
  const stop = async () => {
    for (const role of started.reverse()) await role.stop().catch((err) => log.error({ err, role: role.name }, 'role failed to stop'))
    await ctx?.close()
    if (embedded) rmSync(join(config.dataDir, EMBEDDED_NATS_URL_FILE), { force: true })
    await embedded?.stop()
  }
  try {
    ctx = await openContext(config, natsUrl, log, { main: true })
    if (embedded) writeFileSync(join(config.dataDir, EMBEDDED_NATS_URL_FILE), embedded.url)
    const generatedAdminKey = bootstrapAdminKey(ctx)
    let httpUrl: string | undefined
    const threaded = config.roles.length > 1
    // Sink first, so queries have an answerer by the time ingress takes requests.
    for (const name of ['sink', 'batch', 'rules', 'files', 'ingress'] as const) {
      if (!config.roles.includes(name)) continue
      const onThread = threaded && THREADED_ROLES.has(name)
      const role = onThread ? threadRole(name, ctx, natsUrl) : inProcessRole(name, ctx, (url) => (httpUrl = url))
      await role.start()
      started.push(role)
      log.info({ role: name, thread: onThread }, 'role started')
    }
    return { config, natsUrl, httpUrl, generatedAdminKey, stop }
  } catch (err) {
    await stop()
    throw err
  }
}
