import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { SluiceError } from './errors.ts'

/** Every role `sluice serve` can run; `all` is the default. */
export const ROLE_NAMES = ['ingress', 'sink', 'batch'] as const
export type RoleName = (typeof ROLE_NAMES)[number]

/** The one configuration object: loaded from a JSON file and the environment, validated once, frozen. */
export const ConfigSchema = Type.Object(
  {
    /** Where SQLite, DuckDB and the embedded nats-server store live. Default ./data */
    dataDir: Type.String({ default: './data' }),
    /** Roles this process runs. Default: all of them. */
    roles: Type.Array(Type.Union(ROLE_NAMES.map((r) => Type.Literal(r))), { default: [...ROLE_NAMES], minItems: 1 }),
    /** A NATS server or cluster to use; unset: spawn an embedded nats-server on loopback. */
    natsUrl: Type.Optional(Type.String({ minLength: 1 })),
    /** The admin key to install on first start; unset: one is generated and printed once. */
    adminKey: Type.Optional(Type.String({ minLength: 24 })),
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
        /** Replicas for clustered deployments; 1 for the embedded server. */
        replicas: Type.Integer({ default: 1, minimum: 1, maximum: 5 }),
      },
      { default: {}, additionalProperties: false },
    ),
    sink: Type.Object(
      {
        /** A micro-batch is written when it holds this many records... */
        batchSize: Type.Integer({ default: 2000, minimum: 1 }),
        /** ...or when its oldest record has waited this long, whichever comes first. */
        flushIntervalMs: Type.Integer({ default: 100, minimum: 1 }),
        /** Seconds before JetStream redelivers a record a sink took but did not ack (a crashed sink's records wait this long). */
        ackWaitSeconds: Type.Integer({ default: 10, minimum: 1 }),
        /** /readyz reports not ready while the sink is further behind than this many records. */
        maxReadyLag: Type.Integer({ default: 50000, minimum: 0 }),
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
        chunkSize: Type.Integer({ default: 2000, minimum: 1 }),
        /** A worker holds a job this long past its last sign of life; then another worker may take it over. */
        leaseSeconds: Type.Integer({ default: 30, minimum: 2 }),
        /** How often an idle worker looks for a queued job. */
        pollIntervalMs: Type.Integer({ default: 250, minimum: 10 }),
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
]

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
