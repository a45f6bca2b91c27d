import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { writeCsv, writeNdjson } from '../fixtures/generate.ts'
import { FRAUD_SCENARIOS, type GeneratedRecord, generate, generateBatch, type ObjectName } from '../fixtures/generator.ts'
import { tempDir } from './helpers/sluice.ts'

interface FieldSpec {
  type: 'string' | 'integer' | 'number' | 'boolean' | 'timestamp' | 'json'
  nullable?: boolean
  enum?: string[]
  pattern?: string
  maxLength?: number
  minimum?: number
  maximum?: number
}

interface ObjectSchema {
  id_field: string
  time_field: string
  fields: Record<string, FieldSpec>
}

const OBJECTS: ObjectName[] = ['transaction', 'account', 'activity']
const schemas = Object.fromEntries(
  OBJECTS.map((object) => [object, JSON.parse(readFileSync(new URL(`../fixtures/schemas/${object}.json`, import.meta.url), 'utf8')) as ObjectSchema]),
) as Record<ObjectName, ObjectSchema>

const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})$/

/** Everything wrong with a record against its schema, as readable lines; empty when it conforms. */
function schemaViolations(object: ObjectName, record: Record<string, unknown>): string[] {
  const { fields } = schemas[object]
  const problems: string[] = []
  for (const name of Object.keys(record)) if (!(name in fields)) problems.push(`${name}: not in the schema`)
  for (const [name, spec] of Object.entries(fields)) {
    const value = record[name]
    if (value === undefined || value === null) {
      if (!spec.nullable) problems.push(`${name}: required, got ${value}`)
      continue
    }
    const typeOk = {
      string: typeof value === 'string',
      timestamp: typeof value === 'string' && ISO_DATE_TIME.test(value) && !Number.isNaN(Date.parse(value)),
      integer: Number.isInteger(value),
      number: typeof value === 'number' && Number.isFinite(value),
      boolean: typeof value === 'boolean',
      json: true,
    }[spec.type]
    if (!typeOk) problems.push(`${name}: expected ${spec.type}, got ${JSON.stringify(value)}`)
    if (spec.enum && !spec.enum.includes(value as string)) problems.push(`${name}: ${JSON.stringify(value)} not one of ${spec.enum}`)
    if (spec.pattern && !new RegExp(spec.pattern).test(String(value))) problems.push(`${name}: ${JSON.stringify(value)} does not match ${spec.pattern}`)
    if (spec.maxLength !== undefined && String(value).length > spec.maxLength) problems.push(`${name}: longer than ${spec.maxLength}`)
    if (spec.minimum !== undefined && (value as number) < spec.minimum) problems.push(`${name}: below ${spec.minimum}`)
    if (spec.maximum !== undefined && (value as number) > spec.maximum) problems.push(`${name}: above ${spec.maximum}`)
  }
  return problems
}

function timeOf({ object, record }: GeneratedRecord): number {
  return Date.parse(record[schemas[object].time_field] as string)
}

function scenarioOf(record: Record<string, unknown>): string | undefined {
  return (record.metadata as { scenario?: string } | null)?.scenario
}

t.test('the same seed gives byte-identical output, another seed different output', async (t) => {
  const once = JSON.stringify(generateBatch(5000, { seed: 1 }))
  t.equal(JSON.stringify(generateBatch(5000, { seed: 1 })), once, 'same seed, same bytes')
  t.not(JSON.stringify(generateBatch(5000, { seed: 2 })), once, 'other seed, other data')
})

t.test('20,000 records of every object satisfy their schema, with unique ids', async (t) => {
  const records = generateBatch(20_000, { seed: 5, accounts: 300, days: 14, fraudShare: 0.2 })
  t.equal(records.length, 20_000)
  const violations: string[] = []
  const ids = new Set<string>()
  const seen = new Set<string>()
  for (const { object, record } of records) {
    seen.add(object)
    for (const problem of schemaViolations(object, record)) violations.push(`${object} ${JSON.stringify(record)}: ${problem}`)
    ids.add(`${object}:${record[schemas[object].id_field]}`)
  }
  t.same(violations.slice(0, 10), [], `no violations (${violations.length} in all)`)
  t.same([...seen].sort(), [...OBJECTS].sort(), 'every object is generated')
  t.equal(ids.size, records.length, 'no id repeats within an object')
  t.ok(
    records.some((r) => scenarioOf(r.record)),
    'fraud records are among those checked',
  )
})

t.test('accounts come first, then activity and transactions in time order', async (t) => {
  const records = [...generate({ seed: 9, accounts: 150 })]
  const accounts = records.findIndex((r) => r.object !== 'account')
  t.equal(accounts, 150, 'one account record per account, all first')
  const known = new Set(records.slice(0, accounts).map((r) => r.record.account_id))
  let previous = Number.NEGATIVE_INFINITY
  let outOfOrder = 0
  let strangers = 0
  for (const r of records.slice(accounts)) {
    if (r.object === 'account') strangers++
    if (!known.has(r.record.account_id)) strangers++
    const at = timeOf(r)
    if (at < previous) outOfOrder++
    previous = at
  }
  t.equal(outOfOrder, 0, 'times never go back')
  t.equal(strangers, 0, 'events belong to the generated accounts')
  const start = Date.parse('2026-01-01T00:00:00Z')
  t.ok(timeOf(records[accounts]) >= start && previous < start + 7 * 86_400_000, 'within the default 7 days from 2026-01-01')
})

t.test('with 200 accounts every fraud pattern appears, shaped as described', async (t) => {
  const records = [...generate({ seed: 42, accounts: 200 })]
  const homeOf = new Map(records.filter((r) => r.object === 'account').map((r) => [r.record.account_id, r.record.country]))
  const byScenario = new Map<string, GeneratedRecord[]>()
  for (const r of records) {
    const scenario = scenarioOf(r.record)
    if (scenario) byScenario.set(scenario, [...(byScenario.get(scenario) ?? []), r])
  }
  t.same([...byScenario.keys()].sort(), [...FRAUD_SCENARIOS].sort(), 'all four scenarios are marked')
  const ofAccount = (id: unknown) => records.filter((r) => r.record.account_id === id && r.object !== 'account')

  const burst = byScenario.get('burst') ?? []
  const firstBurst = burst.filter((r) => r.record.account_id === burst[0].record.account_id)
  t.ok(firstBurst.length >= 10 && firstBurst.length <= 30, `burst of ${firstBurst.length} card payments`)
  t.ok(
    firstBurst.every((r) => r.record.type === 'card_payment'),
    'all card payments',
  )
  t.ok(timeOf(firstBurst[firstBurst.length - 1]) - timeOf(firstBurst[0]) <= 5 * 60_000, 'within five minutes')

  const takeover = byScenario.get('account_takeover') ?? []
  const victim = takeover[0].record.account_id
  const steps = takeover.filter((r) => r.record.account_id === victim)
  const login = steps.find((r) => r.record.event_type === 'login')!
  const change = steps.find((r) => r.record.event_type === 'password_change' || r.record.event_type === 'email_change')
  const transfer = steps.find((r) => r.record.type === 'transfer')!
  t.not(login.record.country, homeOf.get(victim), 'login from another country than home')
  const earlierDevices = new Set(
    ofAccount(victim)
      .filter((r) => timeOf(r) < timeOf(steps[0]))
      .map((r) => r.record.device_id),
  )
  t.notOk(earlierDevices.has(login.record.device_id), 'on a device never seen before')
  t.ok(change && timeOf(change) > timeOf(login) && timeOf(change) < timeOf(transfer), 'then a credential change, then the transfer')
  t.ok(timeOf(transfer) - timeOf(login) <= 3_600_000, 'transfer within the hour')

  for (const far of byScenario.get('geo_mismatch') ?? []) {
    const home = homeOf.get(far.record.account_id)
    t.not(far.record.country, home, 'abroad')
    const justBefore = ofAccount(far.record.account_id).filter(
      (r) => r.object === 'transaction' && r.record.country === home && timeOf(r) <= timeOf(far) && timeOf(far) - timeOf(r) <= 3_600_000,
    )
    t.ok(justBefore.length > 0, 'minutes after a transaction at home')
  }

  for (const large of byScenario.get('large_amount') ?? []) {
    const usual = ofAccount(large.record.account_id)
      .filter((r) => r.record.type === 'card_payment' && !scenarioOf(r.record))
      .map((r) => r.record.amount as number)
      .sort((a, b) => a - b)
    const median = usual[Math.floor(usual.length / 2)]
    t.ok((large.record.amount as number) >= 20 * median, `${large.record.amount} is at least 20x the usual ${median}`)
  }
})

t.test('generation is lazy: 200,000 records in flat memory', async (t) => {
  // Live heap only: without a full collection first, heapUsed also counts garbage not yet collected.
  setFlagsFromString('--expose-gc')
  const collectGarbage = runInNewContext('gc') as () => void
  const liveHeap = () => {
    collectGarbage()
    return process.memoryUsage().heapUsed
  }
  const before = liveHeap()
  let peak = before
  let count = 0
  for (const _ of generate({ seed: 3, accounts: 1000, days: Number.POSITIVE_INFINITY })) {
    if (++count % 20_000 === 0) peak = Math.max(peak, liveHeap())
    if (count === 200_000) break
  }
  t.equal(count, 200_000)
  t.ok(peak - before < 100 * 1024 * 1024, `live heap grew ${Math.round((peak - before) / 1024 / 1024)} MB`)
})

t.test('writeNdjson and writeCsv write the requested records of one object', async (t) => {
  const dir = tempDir(t)
  const ndjsonPath = join(dir, 'transactions.ndjson')
  t.equal(await writeNdjson(ndjsonPath, 'transaction', 3000, { seed: 4 }), 3000)
  const lines = readFileSync(ndjsonPath, 'utf8').trimEnd().split('\n')
  t.equal(lines.length, 3000)
  t.same(lines.flatMap((line) => schemaViolations('transaction', JSON.parse(line))).slice(0, 5), [], 'every line a valid transaction')

  const csvPath = join(dir, 'accounts.csv')
  t.equal(await writeCsv(csvPath, 'account', 50, { seed: 4 }), 50, 'one account per record by default')
  const rows = readFileSync(csvPath, 'utf8').split('\r\n')
  t.equal(rows[0], Object.keys(schemas.account.fields).join(','), 'header: the schema fields in order')
  t.equal(rows.length, 52, 'header, 50 rows, final line end')
  t.match(rows[1], /,"{""segment"":""(retail|business)"",""onboarding"":""\w+""}"$/, 'json as quoted JSON text')
  t.equal(await writeCsv(join(dir, 'few.csv'), 'account', 50, { accounts: 10 }), 10, 'no more accounts than asked for')
})
