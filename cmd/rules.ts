import { existsSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import type { Command } from 'commander'
import { type ConfigInput, DEFAULT_SCHEMAS_DIR, EMBEDDED_NATS_URL_FILE, isSluiceError, type SluiceConfig, STREAMS, SUBJECTS } from '../pipeline/index.ts'
import {
  checkRuleSet,
  compileStoredRuleSet,
  type PlainRecord,
  type ReplayReport,
  readRuleSetFile,
  rebuildAnalytics,
  replayRules,
  saveRuleSet,
  testRuleSet,
} from '../rules/index.ts'
import { type Alert, AnalyticsStore, type Decision, openStateDb, RuleOutcomeStore, RuleStore, SchemaRegistry } from '../storage/index.ts'

interface Workspace {
  config: SluiceConfig
  registry: SchemaRegistry
  rules: RuleStore
}

/** The data dir's state, as `sluice serve` would see it. */
function workspace(config: SluiceConfig): Workspace {
  const db = openStateDb(join(config.dataDir, 'state.db'))
  const registry = new SchemaRegistry(db)
  registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
  return { config, registry, rules: new RuleStore(db) }
}

const ruleChecks = (ws: Workspace) => ({ registry: ws.registry, retentionDays: ws.config.streams.recordRetentionDays })
const stateOptions = (config: SluiceConfig) => ({
  activityWindowMs: config.rules.activityWindowHours * 3_600_000,
  lateMs: config.rules.lateArrivalMinutes * 60_000,
})

/** NATS_URL, else the embedded server a `sluice serve` on this data dir noted; undefined when neither. */
function natsUrlOf(config: SluiceConfig): string | undefined {
  const file = join(config.dataDir, EMBEDDED_NATS_URL_FILE)
  return config.natsUrl ?? (existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined)
}

async function connectOrExit(cmd: Command, config: SluiceConfig): Promise<NatsConnection> {
  const servers = natsUrlOf(config)
  if (!servers) return cmd.error(`no NATS to reach: set NATS_URL, or start \`sluice serve\` on the data dir ${config.dataDir}`)
  try {
    return await connect({ servers, name: 'sluice-cli' })
  } catch (err) {
    return cmd.error(`cannot reach NATS at ${servers}: ${(err as Error).message}`)
  }
}

/** Runs `action`, turning a SluiceError (an invalid rule set, say) into the CLI's error exit with every problem listed. */
async function orExit<T>(cmd: Command, action: () => T | Promise<T>): Promise<T> {
  try {
    return await action()
  } catch (err) {
    if (!isSluiceError(err)) throw err
    const problems = (err.errors ?? []).map((e) => `\n  ${e.pointer || '/'}: ${e.message}`).join('')
    return cmd.error(`${err.code}: ${err.message}${problems}`)
  }
}

function parseJsonOption(cmd: Command, name: string, text: string): unknown {
  try {
    return JSON.parse(text.startsWith('@') ? readFileSync(text.slice(1), 'utf8') : text)
  } catch (err) {
    return cmd.error(`--${name} is not JSON (or @FILE of JSON): ${(err as Error).message}`)
  }
}

/** `123` is a stream sequence, anything else an ISO 8601 time. */
function positionOf(cmd: Command, name: string, text: string): { seq: number } | { time: number } {
  if (/^\d+$/.test(text)) return { seq: Number(text) }
  const time = Date.parse(text)
  if (Number.isNaN(time)) return cmd.error(`--${name} must be a stream sequence (digits) or an ISO 8601 time, got ${text}`)
  return { time }
}

function describeDecision(d: Decision): string {
  const lines = [`${d.decision}  score ${d.score}${d.tags.length ? `  tags ${d.tags.join(',')}` : ''}${d.stopped_by ? `  stopped by ${d.stopped_by}` : ''}`]
  const byRule = new Map([...d.fired, ...d.shadow_hits].map((h) => [h.rule_id, h]))
  const failures = new Map(d.errors.map((e) => [e.rule_id, e.message]))
  for (const e of d.evaluations) {
    const hit = byRule.get(e.rule_id)
    const detail = hit
      ? `  +${hit.mode === 'live' ? hit.score : 0} ${JSON.stringify(hit.features)}`
      : failures.has(e.rule_id)
        ? `  ${failures.get(e.rule_id)}`
        : ''
    lines.push(`  ${e.outcome.padEnd(10)} ${e.rule_id}${detail}`)
  }
  return lines.join('\n')
}

function describeAlert(a: Alert): string {
  return `${a.evaluated_at}  ${a.severity.padEnd(8)} ${a.object}/${a.rule_id} v${a.rule_version}  +${a.score} -> ${a.decision} (${a.total_score})  record ${a.record_id}  account ${a.account_id ?? '-'}  ${JSON.stringify(a.features)}`
}

function describeReplay(r: ReplayReport): string {
  const lines = [
    `replay ${r.replay_id}: ${r.records} records evaluated (stream sequences ${r.first_seq ?? '-'} to ${r.last_seq ?? '-'})`,
    `decisions   replayed ${JSON.stringify(r.replayed.decisions)}   live (v${r.live.rule_set_version}) ${JSON.stringify(r.live.decisions)}   changed ${r.changed_decisions}`,
    '',
    `${'rule'.padEnd(36)} ${'hits'.padStart(8)} ${'shadow'.padStart(8)} ${'errors'.padStart(8)}`,
    ...r.replayed.rules.map(
      (t) => `${t.rule_id.padEnd(36)} ${String(t.hits).padStart(8)} ${String(t.shadow_hits).padStart(8)} ${String(t.errors).padStart(8)}`,
    ),
  ]
  if (r.differences.length > 0) {
    lines.push('', `difference from the live rule set (v${r.live.rule_set_version}):`)
    for (const d of r.differences)
      lines.push(`  ${d.rule_id.padEnd(34)} replayed ${d.replayed_hits}, live ${d.live_hits}: +${d.only_replayed} only replayed, -${d.only_live} only live`)
  } else lines.push('', 'no difference from the live rule set in which records each rule hits')
  if (r.published > 0) lines.push(`published ${r.published} alerts under replay.alerts.> (replay_id ${r.replay_id})`)
  return lines.join('\n')
}

/** A live rule stage picks the new version up at once; without NATS it does at its next start. */
async function announce(config: SluiceConfig, version: number): Promise<string> {
  const servers = natsUrlOf(config)
  if (!servers) return 'no NATS reachable: running rule stages load it when they start'
  const nc = await connect({ servers, name: 'sluice-cli', timeout: 2000 }).catch(() => undefined)
  if (!nc) return `NATS at ${servers} did not answer: running rule stages load it when they start`
  nc.publish(SUBJECTS.rulesChanged, JSON.stringify({ version }))
  await nc.drain()
  return 'running rule stages were told'
}

/** `sluice rules`, `sluice alerts` and `sluice replay`. */
export function registerRuleCommands(program: Command, configFrom: (overrides?: ConfigInput) => SluiceConfig): void {
  const rules = program.command('rules').description('the rule set (works on the data dir directly)')

  rules
    .command('list')
    .description('the live rules, in evaluation order per object')
    .option('--json', 'machine-readable output')
    .action((opts: { json?: boolean }) => {
      const current = workspace(configFrom()).rules.current()
      if (opts.json) return console.log(JSON.stringify(current))
      console.log(`rule set v${current.version}${current.created_at ? `  ${current.created_at} by ${current.created_by}` : ''}`)
      for (const r of current.rules) {
        const flags = [r.mode === 'shadow' && 'shadow', r.stop && 'stop', !r.enabled && 'disabled'].filter(Boolean).join(',')
        console.log(
          `${r.object.padEnd(12)} ${String(r.order).padStart(4)}  ${r.id.padEnd(34)} v${r.version}  +${r.score} ${r.severity}${flags ? ` [${flags}]` : ''}\n${' '.repeat(19)}${r.when}`,
        )
      }
    })

  rules
    .command('apply <file>')
    .description('make FILE (a rule set document) the live rule set; changed rules get a new version')
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const ws = workspace(configFrom())
      const { ruleSet, changes } = await orExit(cmd, () => saveRuleSet(ws.rules, readRuleSetFile(file), { ...ruleChecks(ws), actor: 'cli' }))
      if (changes.length === 0) return console.log(`no change: rule set v${ruleSet.version} already is ${file}`)
      console.log(`rule set v${ruleSet.version}`)
      for (const c of changes) console.log(`  ${c.change.padEnd(8)} ${c.rule_id} v${c.version}`)
      console.log(await announce(ws.config, ruleSet.version))
    })

  rules
    .command('test <file>')
    .description('evaluate FILE on one record and show what each rule did')
    .requiredOption('--record <json>', 'the record (JSON, or @FILE)')
    .option('--object <name>', 'its object type', 'transaction')
    .option('--before <json>', 'records taken in first, as [{"object": ..., "record": ...}] (JSON, or @FILE): the account, its activity, earlier transactions')
    .option('--json', 'the decision as JSON')
    .action(async (file: string, opts: { record: string; object: string; before?: string; json?: boolean }, cmd: Command) => {
      const ws = workspace(configFrom())
      const before = (opts.before ? parseJsonOption(cmd, 'before', opts.before) : []) as PlainRecord[]
      const record = parseJsonOption(cmd, 'record', opts.record) as Record<string, unknown>
      const decision = await orExit(cmd, () =>
        testRuleSet(readRuleSetFile(file), { object: opts.object, record, before }, { ...ruleChecks(ws), ...stateOptions(ws.config) }),
      )
      console.log(opts.json ? JSON.stringify(decision) : describeDecision(decision))
    })

  const alerts = program.command('alerts').description('rule hits')
  alerts
    .command('tail')
    .description('print alerts as they are raised, until Ctrl-C')
    .option('--object <name>', 'only alerts on records of this object')
    .option('--rule <id>', 'only alerts of this rule')
    .option('--count <n>', 'stop after this many alerts')
    .option('--json', 'one alert per line as JSON')
    .action(async (opts: { object?: string; rule?: string; count?: string; json?: boolean }, cmd: Command) => {
      const config = configFrom()
      const nc = await connectOrExit(cmd, config)
      const consumer = await jetstream(nc).consumers.get(STREAMS.alerts.name, {
        filter_subjects: SUBJECTS.alert(opts.object ?? '*', opts.rule ?? '*'),
        deliver_policy: DeliverPolicy.New,
      })
      const messages = await consumer.consume()
      process.once('SIGINT', () => void messages.close())
      // Subscribed: a script may now make the alerts it waits for.
      console.error(`tailing ${SUBJECTS.alert(opts.object ?? '*', opts.rule ?? '*')}`)
      let seen = 0
      for await (const msg of messages) {
        const alert = msg.json<Alert>()
        console.log(opts.json ? JSON.stringify(alert) : describeAlert(alert))
        if (opts.count && ++seen >= Number(opts.count)) break
      }
      await nc.drain()
    })

  program
    .command('replay')
    .description('backtest a rule set over the record stream, or rebuild the analytics store from the streams')
    .option('--from <time|seq>', 'first record evaluated: an ISO 8601 time or a stream sequence')
    .option('--to <time|seq>', 'last record evaluated (default: the newest)')
    .option('--object <name>', 'evaluate only records of this object')
    .option('--rules <file>', 'the rule set to replay (default: the live one)')
    .option('--publish', 'publish its alerts under replay.alerts.<object>.<rule_id> (never the live subjects)')
    .option('--json', 'the report as JSON')
    .option('--rebuild-analytics', 'rebuild the DuckDB analytics file from the streams (stop the sink role first)')
    .action(
      async (
        opts: { from?: string; to?: string; object?: string; rules?: string; publish?: boolean; json?: boolean; rebuildAnalytics?: boolean },
        cmd: Command,
      ) => {
        const ws = workspace(configFrom())
        if (opts.rebuildAnalytics) return rebuildAnalyticsFile(cmd, ws)
        if (!opts.from) return cmd.error('give --from (or --rebuild-analytics)')
        const from = positionOf(cmd, 'from', opts.from)
        const to = opts.to === undefined ? undefined : positionOf(cmd, 'to', opts.to)
        const live = compileStoredRuleSet(ws.rules.current())
        const file = opts.rules
        const replayed = file ? (await orExit(cmd, () => checkRuleSet(readRuleSetFile(file), ruleChecks(ws)))).ruleSet : live
        const nc = await connectOrExit(cmd, ws.config)
        try {
          const report = await replayRules({
            js: jetstream(nc),
            jsm: await jetstreamManager(nc),
            registry: ws.registry,
            from,
            to,
            object: opts.object,
            replayed,
            live,
            state: stateOptions(ws.config),
            replayId: `replay-${new Date().toISOString().replace(/[:.]/g, '-')}`,
            publish: opts.publish,
          })
          console.log(opts.json ? JSON.stringify(report) : describeReplay(report))
        } finally {
          await nc.drain()
        }
      },
    )
}

/** Builds a new analytics file from the streams beside the live one, then swaps them, keeping the old one as a backup. */
async function rebuildAnalyticsFile(cmd: Command, ws: Workspace): Promise<void> {
  const live = join(ws.config.dataDir, 'analytics.duckdb')
  const fresh = `${live}.rebuild`
  // DuckDB lets one process hold a file: a running sink role would keep writing to the old one.
  if (existsSync(live)) {
    const probe = await AnalyticsStore.open(live).catch((err: Error) => cmd.error(`the analytics file is in use (stop the sink role first): ${err.message}`))
    probe.close()
  }
  rmSync(fresh, { force: true })
  rmSync(`${fresh}.wal`, { force: true })
  const nc = await connectOrExit(cmd, ws.config)
  const analytics = await AnalyticsStore.open(fresh)
  const outcomes = await RuleOutcomeStore.open(analytics)
  try {
    const counts = await rebuildAnalytics(jetstream(nc), { registry: ws.registry, analytics, outcomes, batchSize: ws.config.sink.batchSize })
    outcomes.close()
    analytics.close()
    const backup = `${live}.${new Date().toISOString().replace(/[:.]/g, '-')}.bak`
    if (existsSync(live)) renameSync(live, backup)
    renameSync(fresh, live)
    console.log(`rebuilt ${live}: ${counts.records} records, ${counts.decisions} decisions${existsSync(backup) ? `; the previous file is ${backup}` : ''}`)
  } finally {
    await nc.drain()
  }
}
