import { join } from 'node:path'
import { Command, Option } from 'commander'
import {
  type ConfigInput,
  createLogger,
  DEFAULT_SCHEMAS_DIR,
  isSluiceError,
  loadConfig,
  ROLE_NAMES,
  type SluiceConfig,
  startSluice,
} from '../pipeline/index.ts'
import { ApiKeyStore, diffSchemas, openStateDb, SCOPES, type SchemaChange, SchemaRegistry, type SchemaVersion, type Scope } from '../storage/index.ts'
import { registerBatchCommands } from './batch.ts'
import { runDemo } from './demo.ts'
import { registerFilesCommands } from './files.ts'
import { registerRuleCommands } from './rules.ts'

const program = new Command('sluice')
  .description('Real-time ingestion for fraud and transaction monitoring')
  .option('-c, --config <file>', 'JSON config file (also SLUICE_CONFIG)')

function configFrom(overrides: ConfigInput = {}): SluiceConfig {
  return loadConfig({ file: program.opts().config, overrides })
}

program
  .command('serve')
  .description('run the pipeline roles (all of them by default) until SIGINT/SIGTERM')
  .addOption(new Option('--roles <list>', `comma-separated roles: ${ROLE_NAMES.join(', ')}`))
  .option('--port <port>', 'HTTP port (SLUICE_HTTP_PORT)')
  .option('--data-dir <dir>', 'data directory (SLUICE_DATA_DIR)')
  .action(async (opts: { roles?: string; port?: string; dataDir?: string }) => {
    const config = configFrom({
      ...(opts.roles && { roles: opts.roles.split(',').map((r) => r.trim()) }),
      ...(opts.port && { http: { port: Number(opts.port) } }),
      ...(opts.dataDir && { dataDir: opts.dataDir }),
    })
    const log = createLogger(config)
    const sluice = await startSluice(config, { log })
    if (sluice.generatedAdminKey) {
      // Printed once, on stdout, outside the JSON log: it is stored only as a hash.
      process.stdout.write(`\nAdmin API key (shown only now, keep it safe):\n  ${sluice.generatedAdminKey}\n\n`)
    }
    log.info({ http: sluice.httpUrl, nats: sluice.natsUrl, roles: config.roles, dataDir: config.dataDir }, 'sluice is running')
    let stopping = false
    const shutdown = async (signal: string) => {
      if (stopping) return
      stopping = true
      log.info({ signal }, 'shutting down')
      await sluice.stop()
      log.info('stopped')
      process.exit(0)
    }
    process.on('SIGINT', shutdown)
    process.on('SIGTERM', shutdown)
  })

/** One line per change, as a person reads a diff. */
function describeChange(c: SchemaChange): string {
  switch (c.op) {
    case 'add_field':
      return `+ ${c.field}: ${c.spec.type}${c.spec.nullable ? ', nullable' : ''}`
    case 'remove_field':
      return `- ${c.field}`
    case 'make_nullable':
      return `~ ${c.field}: now nullable`
    case 'make_required':
      return `~ ${c.field}: now required`
    case 'change_type':
      return `~ ${c.field}: ${c.from} -> ${c.to}`
    case 'change_constraints':
      return `~ ${c.field}: constraints changed`
    case 'change_meta':
      return `~ ${c.what}: ${c.from ?? '(none)'} -> ${c.to ?? '(none)'}`
  }
}

const schema = program.command('schema').description('read the schemas on file (works on the data dir directly)')
function schemaRegistry(): SchemaRegistry {
  const registry = new SchemaRegistry(openStateDb(join(configFrom().dataDir, 'state.db')))
  registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
  return registry
}
function versionOrExit(registry: SchemaRegistry, object: string, n?: string): SchemaVersion {
  const v = n === undefined ? registry.current(object) : registry.version(object, Number(n))
  if (!v) return program.error(n === undefined ? `no object type ${object}; known: ${registry.objects().join(', ')}` : `${object} has no version ${n}`)
  return v
}
schema
  .command('show [object]')
  .description('the current schema of an object, or the list of objects')
  .option('--version <n>', 'an older version')
  .action((object: string | undefined, opts: { version?: string }) => {
    const registry = schemaRegistry()
    if (!object) {
      for (const o of registry.objects()) console.log(`${o}  v${versionOrExit(registry, o).version}`)
      return
    }
    console.log(JSON.stringify(versionOrExit(registry, object, opts.version), null, 2))
  })
schema
  .command('history <object>')
  .description('every version: when, who, why, what changed')
  .action((object: string) => {
    const registry = schemaRegistry()
    versionOrExit(registry, object)
    for (const v of registry.versions(object)) {
      const why = v.reason === 'auto' ? `auto (record ${v.trigger_record_id})` : v.reason
      console.log(`v${v.version}  ${v.created_at}  by ${v.created_by}  ${why}`)
      for (const c of v.version === 1 ? [] : v.diff) console.log(`    ${describeChange(c)}`)
    }
  })
schema
  .command('diff <object> [from] [to]')
  .description('the changes between two versions (default: the previous and the current one)')
  .action((object: string, from?: string, to?: string) => {
    const registry = schemaRegistry()
    const newer = versionOrExit(registry, object, to)
    const older = versionOrExit(registry, object, from ?? String(Math.max(1, newer.version - 1)))
    const changes = diffSchemas(older.schema, newer.schema)
    console.log(`${object} v${older.version} -> v${newer.version}: ${changes.length ? '' : 'no changes'}`)
    for (const c of changes) console.log(`  ${describeChange(c)}`)
  })

const keys = program.command('keys').description('manage API keys (works on the data dir directly)')
function keyStore(): ApiKeyStore {
  return new ApiKeyStore(openStateDb(join(configFrom().dataDir, 'state.db')))
}
keys
  .command('create')
  .description('create a key and print its secret (shown only once)')
  .requiredOption('--name <name>', 'who or what uses the key')
  .addOption(new Option('--scopes <list>', `comma-separated: ${SCOPES.join(', ')}`).default('ingest,read'))
  .option('--json', 'machine-readable output')
  .action((opts: { name: string; scopes: string; json?: boolean }) => {
    const scopes = opts.scopes.split(',').map((s) => s.trim())
    const bad = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s))
    if (bad.length) program.error(`unknown scope ${bad.join(', ')}; scopes are ${SCOPES.join(', ')}`)
    const { key, info } = keyStore().create({ name: opts.name, scopes: scopes as Scope[] })
    if (opts.json) console.log(JSON.stringify({ ...info, key }))
    else console.log(`${info.id}  ${info.name}  [${info.scopes.join(',')}]\n${key}`)
  })
keys
  .command('list')
  .option('--json', 'machine-readable output')
  .action((opts: { json?: boolean }) => {
    const list = keyStore().list()
    if (opts.json) return console.log(JSON.stringify(list))
    for (const k of list)
      console.log(
        `${k.id}  ${k.name.padEnd(20)} [${k.scopes.join(',')}]  ${k.revoked_at ? `revoked ${k.revoked_at}` : 'active'}  last used ${k.last_used_at ?? 'never'}`,
      )
  })
keys.command('revoke <id>').action((id: string) => {
  if (!keyStore().revoke(id)) program.error(`no active key ${id}`)
  console.log(`revoked ${id}`)
})

program
  .command('demo')
  .description('stream generated, realistic data into a running Sluice')
  .option('--url <url>', 'Sluice HTTP base URL', `http://127.0.0.1:${process.env.SLUICE_HTTP_PORT ?? 8080}`)
  .option('--key <key>', 'API key with the ingest scope (or SLUICE_API_KEY, SLUICE_ADMIN_KEY)')
  .option('--rate <n>', 'records per second', '50')
  .option('--count <n>', 'stop after this many records')
  .option('--seed <n>', 'generator seed', '42')
  .action(async (opts: { url: string; key?: string; rate: string; count?: string; seed: string }) => {
    const apiKey = opts.key ?? process.env.SLUICE_API_KEY ?? process.env.SLUICE_ADMIN_KEY
    if (!apiKey) return program.error('give an API key with --key or SLUICE_API_KEY')
    const abort = new AbortController()
    process.on('SIGINT', () => abort.abort())
    const { sent, rejected } = await runDemo({
      url: opts.url,
      apiKey,
      rate: Number(opts.rate),
      count: opts.count ? Number(opts.count) : undefined,
      seed: Number(opts.seed),
      signal: abort.signal,
    })
    console.log(`done: ${sent} sent, ${rejected} rejected`)
  })

registerBatchCommands(program)
registerFilesCommands(program)
registerRuleCommands(program, configFrom)

/** What went wrong, in one line for the person at the terminal: a stack trace tells them nothing. */
function describeFailure(err: unknown): string {
  const failure = err as NodeJS.ErrnoException & { address?: string; port?: number }
  if (failure?.code === 'EADDRINUSE')
    return `cannot listen on ${failure.address}:${failure.port}: the address is in use (another Sluice?); choose another port (--port or SLUICE_HTTP_PORT for HTTP, files.sftpPort for SFTP)`
  if (isSluiceError(err)) return `${err.code}: ${err.message}`
  return failure?.message ?? String(err)
}

try {
  await program.parseAsync()
} catch (err) {
  process.stderr.write(`sluice: ${describeFailure(err)}\n`)
  process.exit(1)
}
