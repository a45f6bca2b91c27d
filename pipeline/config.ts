import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { SluiceError } from './errors.ts'
import { RECORD_PARTITIONS } from './streams.ts'

/** Every role `sluice serve` can run. */
export const ROLE_NAMES = ['ingress', 'sink', 'batch', 'rules', 'files'] as const
export type RoleName = (typeof ROLE_NAMES)[number]
/** The roles run when none are named: all but `files`, which opens an SSH port and so is asked for. */
export const DEFAULT_ROLES: readonly RoleName[] = ROLE_NAMES.filter((r) => r !== 'files')

/** The one configuration object: loaded from a JSON file and the environment, validated once, frozen. */
export const ConfigSchema = Type.Object(
  {
    /** Where SQLite, DuckDB and the embedded nats-server store live. Default ./data */
    dataDir: Type.String({ default: './data' }),
    /** Roles this process runs. Default: all of them. */
    roles: Type.Array(Type.Union(ROLE_NAMES.map((r) => Type.Literal(r))), { default: [...DEFAULT_ROLES], minItems: 1 }),
    /** A NATS server or cluster to use; unset: spawn an embedded nats-server on loopback. */
    natsUrl: Type.Optional(Type.String({ minLength: 1 })),
    /** The admin key to install on first start; unset: one is generated and printed once. */
    adminKey: Type.Optional(Type.String({ minLength: 24 })),
    /** The nats-server `sluice serve` spawns when no natsUrl is set. */
    embeddedNats: Type.Object(
      {
        /**
         * Cores its Go runtime may run on at once (GOMAXPROCS); 0: all of them. One core cut its CPU per ingested
         * record by about a third on two cores (idle Go threads spin looking for work), leaving more to Sluice.
         */
        cpus: Type.Integer({ default: 1, minimum: 0 }),
        /**
         * A soft limit on its memory (GOMEMLIMIT), MiB; 0: none. Its Go heap otherwise grows to twice what it holds:
         * 1.2-1.4 GB during a million-record batch job, about 600 MB with a limit of 300-400, for a job 7-10% slower.
         */
        memoryLimitMb: Type.Integer({ default: 0, minimum: 0 }),
      },
      { default: {}, additionalProperties: false },
    ),
    http: Type.Object(
      {
        host: Type.String({ default: '127.0.0.1' }),
        port: Type.Integer({ default: 8080, minimum: 0, maximum: 65535 }),
        /** Largest accepted single-record body, bytes. */
        bodyLimit: Type.Integer({ default: 1048576, minimum: 1024 }),
        /** How long a POST waits for JetStream's ack before answering 503. */
        publishTimeoutMs: Type.Integer({ default: 5000, minimum: 100 }),
        /** Seconds a 503 tells the client to wait before retrying. */
        retryAfterSeconds: Type.Integer({ default: 2, minimum: 1 }),
        /** Timeout of query requests from ingress to the analytics sink. */
        queryTimeoutMs: Type.Integer({ default: 10000, minimum: 100 }),
      },
      { default: {}, additionalProperties: false },
    ),
    streams: Type.Object(
      {
        /** How long accepted records stay in JetStream: the replay window. */
        recordRetentionDays: Type.Number({ default: 30, exclusiveMinimum: 0 }),
        /** JetStream duplicate window used for idempotency; each id in it costs server memory. */
        duplicateWindowSeconds: Type.Integer({ default: 120, minimum: 1 }),
        alertRetentionDays: Type.Number({ default: 30, exclusiveMinimum: 0 }),
        /** How long rule decisions stay in JetStream: the rule outcome sink must store them within it. */
        decisionRetentionDays: Type.Number({ default: 7, exclusiveMinimum: 0 }),
        /** Replicas for clustered deployments; 1 for the embedded server. */
        replicas: Type.Integer({ default: 1, minimum: 1, maximum: 5 }),
      },
      { default: {}, additionalProperties: false },
    ),
    sink: Type.Object(
      {
        /** A micro-batch is written when it holds this many records... */
        batchSize: Type.Integer({ default: 2000, minimum: 1 }),
        /** ...or when its oldest record has waited this long, whichever comes first (decisions too). */
        flushIntervalMs: Type.Integer({ default: 100, minimum: 1 }),
        /**
         * Most rule decisions written at once. A write's fixed cost (finding decisions stored before, the per-rule
         * counters, the commit) made 2,000 at a time the slowest part of a million-record job (docs/performance.md).
         */
        decisionBatchSize: Type.Integer({ default: 8000, minimum: 1 }),
        /** Seconds before JetStream redelivers a record a sink took but did not ack (a crashed sink's records wait this long). */
        ackWaitSeconds: Type.Integer({ default: 10, minimum: 1 }),
        /** /readyz reports not ready while the sink is further behind than this many records. */
        maxReadyLag: Type.Integer({ default: 50000, minimum: 0 }),
        /**
         * DuckDB folds its write-ahead log into the file once the log holds this many MB. Its default (16) made
         * a million-record job checkpoint some fifty times; 64 took a tenth off the job's CPU (docs/performance.md).
         */
        checkpointThresholdMb: Type.Integer({ default: 64, minimum: 1 }),
        /**
         * What DuckDB may hold in memory (its buffers; past it, large queries spill to the data dir). Unbounded
         * (DuckDB's default is 80% of the machine), its checkpoints during a million-record job reached 490 MB.
         */
        memoryLimitMb: Type.Integer({ default: 256, minimum: 64 }),
      },
      { default: {}, additionalProperties: false },
    ),
    batch: Type.Object(
      {
        /** Largest upload, bytes (also the limit once decompressed). Default 1 GiB. */
        maxBytes: Type.Integer({ default: 1073741824, minimum: 1024 }),
        /** Most records in one job. */
        maxRecords: Type.Integer({ default: 5000000, minimum: 1 }),
        /** Records validated and published together; the checkpoint moves after each chunk. */
        chunkSize: Type.Integer({ default: 16000, minimum: 1 }),
        /** A worker holds a job this long past its last sign of life; then another worker may take it over. */
        leaseSeconds: Type.Integer({ default: 30, minimum: 2 }),
        /** How often an idle worker looks for a queued job. */
        pollIntervalMs: Type.Integer({ default: 250, minimum: 10 }),
        /**
         * Once a job's records are stored, it completes when the rule stage has decided on them all, or when the
         * count of decided records has not moved for this long (the rule stage is down, say).
         */
        evaluationWaitSeconds: Type.Integer({ default: 30, minimum: 0 }),
        /**
         * A job sends its next chunk only while the analytics sink has at most this many messages of the record
         * stream still to store. Records sent in real time meanwhile queue behind no more than that, so they stay
         * queryable within about a second during a large job (without it, 8 s and growing 16 s into a
         * 400,000-row job); the job takes as long. 0: no limit.
         */
        sinkBacklogMessages: Type.Integer({ default: 200, minimum: 0 }),
        /** A sink that has stored nothing for this long (its consumer's ack floor has not moved) is taken for stopped, and the job sends on without it. */
        sinkStallSeconds: Type.Integer({ default: 10, minimum: 1 }),
      },
      { default: {}, additionalProperties: false },
    ),
    rules: Type.Object(
      {
        /** Record partitions this process's rule stage owns (SLUICE_RULES_PARTITIONS, e.g. 0-7). Default: all. */
        partitions: Type.Array(Type.Integer({ minimum: 0, maximum: RECORD_PARTITIONS - 1 }), {
          default: Array.from({ length: RECORD_PARTITIONS }, (_, p) => p),
          minItems: 1,
          uniqueItems: true,
        }),
        /** How long `POST ?decision=sync` waits for the rule stage before answering that the decision is pending. */
        syncTimeoutMs: Type.Integer({ default: 200, minimum: 1 }),
        /** Records of one partition evaluated and not yet stored, at most (also the messages JetStream lets it hold unacked). */
        maxInFlight: Type.Integer({ default: 1000, minimum: 1 }),
        /** Seconds before JetStream redelivers a record a crashed rule worker took. */
        ackWaitSeconds: Type.Integer({ default: 30, minimum: 1 }),
        /** How far back `activity` in expressions reaches from a record's time. */
        activityWindowHours: Type.Number({ default: 720, exclusiveMinimum: 0 }),
        /** How late after its own time a record may arrive and still find its windows complete after a restart. */
        lateArrivalMinutes: Type.Number({ default: 60, minimum: 0 }),
      },
      { default: {}, additionalProperties: false },
    ),
    files: Type.Object(
      {
        /** SFTP listen address; loopback unless exposed on purpose. */
        sftpHost: Type.String({ default: '127.0.0.1' }),
        /** SFTP port (SLUICE_SFTP_PORT). */
        sftpPort: Type.Integer({ default: 2222, minimum: 0, maximum: 65535 }),
        /** Local directories watched like the SFTP root, for files copied in by rsync or a mounted share. */
        dropDirs: Type.Array(Type.String({ minLength: 1 }), { default: [] }),
        /** A dropped file is taken once its size and time have not changed for this long. */
        stableMs: Type.Integer({ default: 2000, minimum: 50 }),
        /** A failed SFTP login is answered after this long, doubled for each further failure from the same address (at most 30 s). */
        loginFailureDelayMs: Type.Integer({ default: 1000, minimum: 0 }),
        /** Base URL of upload links; unset: the address the API request came to, or http.host:http.port for the CLI. */
        publicUrl: Type.Optional(Type.String({ pattern: '^https?://' })),
      },
      { default: {}, additionalProperties: false },
    ),
    log: Type.Object(
      {
        level: Type.Union(
          ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
          { default: 'info' },
        ),
      },
      { default: {}, additionalProperties: false },
    ),
  },
  { additionalProperties: false },
)
export type SluiceConfig = Readonly<Static<typeof ConfigSchema>>

/** Deep partial input accepted by loadConfig (from a file, the environment or a test). */
export type ConfigInput = { [K in keyof Static<typeof ConfigSchema>]?: unknown }

const ENV_MAP: ReadonlyArray<[string, (input: Record<string, any>, value: string) => void]> = [
  ['SLUICE_DATA_DIR', (c, v) => (c.dataDir = v)],
  ['SLUICE_HTTP_PORT', (c, v) => ((c.http ??= {}).port = Number(v))],
  ['SLUICE_HTTP_HOST', (c, v) => ((c.http ??= {}).host = v)],
  ['NATS_URL', (c, v) => (c.natsUrl = v)],
  ['SLUICE_ADMIN_KEY', (c, v) => (c.adminKey = v)],
  ['SLUICE_ROLES', (c, v) => (c.roles = v.split(',').map((r) => r.trim()))],
  ['SLUICE_LOG_LEVEL', (c, v) => ((c.log ??= {}).level = v)],
  ['SLUICE_SFTP_PORT', (c, v) => ((c.files ??= {}).sftpPort = Number(v))],
  ['SLUICE_RULES_PARTITIONS', (c, v) => ((c.rules ??= {}).partitions = partitionList(v))],
]

/** `0-7,12` -> [0, 1, ..., 7, 12]; what does not parse is left for the schema check to name. */
function partitionList(value: string): unknown[] {
  return value.split(',').flatMap((part) => {
    const range = /^\s*(\d+)\s*-\s*(\d+)\s*$/.exec(part)
    if (!range) return [/^\s*\d+\s*$/.test(part) ? Number(part) : part.trim()]
    const [from, to] = [Number(range[1]), Number(range[2])]
    return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
  })
}

function deepMerge(base: Record<string, any>, over: Record<string, any>): Record<string, any> {
  const out: Record<string, any> = { ...base }
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && typeof out[k] === 'object' ? deepMerge(out[k], v) : v
  }
  return out
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v)
    Object.freeze(value)
  }
  return value
}

/**
 * Builds the config from, lowest precedence first: defaults, the JSON file (`file`, or SLUICE_CONFIG),
 * the environment, then `overrides` (command-line flags). Fails listing every invalid setting.
 */
export function loadConfig(opts: { file?: string; env?: NodeJS.ProcessEnv; overrides?: ConfigInput } = {}): SluiceConfig {
  const env = opts.env ?? process.env
  let input: Record<string, any> = {}
  const file = opts.file ?? env.SLUICE_CONFIG
  if (file) {
    try {
      input = JSON.parse(readFileSync(file, 'utf8'))
    } catch (cause) {
      throw new SluiceError('SLUICE_CONFIG_INVALID', `cannot read config file ${file}: ${(cause as Error).message}`, { cause })
    }
  }
  const fromEnv: Record<string, any> = {}
  for (const [name, apply] of ENV_MAP) if (env[name] !== undefined && env[name] !== '') apply(fromEnv, env[name] as string)
  input = deepMerge(deepMerge(input, fromEnv), (opts.overrides ?? {}) as Record<string, any>)
  const config = Value.Default(ConfigSchema, Value.Clone(input)) as Static<typeof ConfigSchema>
  const errors = [...Value.Errors(ConfigSchema, config)]
  if (errors.length > 0) {
    const list = errors.map((e) => `${e.path || '/'}: ${e.message}`).join('; ')
    throw new SluiceError('SLUICE_CONFIG_INVALID', `invalid configuration: ${list}`, {
      errors: errors.map((e) => ({ pointer: e.path, message: e.message })),
    })
  }
  config.dataDir = resolve(config.dataDir)
  return deepFreeze(config)
}
