import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { FRAUD_SCENARIOS, generate } from '../fixtures/generator.ts'
import { DEFAULT_SCHEMAS_DIR, type FieldError } from '../pipeline/index.ts'
import { DEFAULT_RULES_FILE, evaluateRecords, readRuleSetFile, saveRuleSet, validateRuleSet } from '../rules/index.ts'
import { type Decision, openStateDb, RuleStore, SchemaRegistry } from '../storage/index.ts'
import { tempDir } from './helpers/sluice.ts'

const DAY_MS = 86_400_000
const STATE = { activityWindowMs: 30 * DAY_MS, lateMs: 3_600_000 }
const fixture = (name: string) => JSON.parse(readFileSync(new URL(`../fixtures/cases/${name}`, import.meta.url), 'utf8'))

function schemas(t: Test) {
  const db = openStateDb(join(tempDir(t), 'state.db'))
  t.teardown(() => db.close())
  const registry = new SchemaRegistry(db)
  registry.loadDefaults(DEFAULT_SCHEMAS_DIR)
  return { db, registry, schemaOf: (object: string) => registry.current(object)?.schema }
}

interface RuleCase {
  name: string
  rules: string
  records: { object: string; set: Record<string, unknown> }[]
  expect: {
    decision: string
    score: number
    fired: string[]
    tags?: string[]
    shadow_hits?: string[]
    errors?: string[]
    stopped_by?: string
    not_evaluated?: string[]
    features?: Record<string, Record<string, number>>
  }
}

t.test('rule cases from fixtures/cases/rules.json', async (t) => {
  const { registry, schemaOf } = schemas(t)
  const {
    bases,
    rule_sets: ruleSets,
    cases,
  } = fixture('rules.json') as {
    bases: Record<string, Record<string, unknown>>
    rule_sets: Record<string, unknown>
    cases: RuleCase[]
  }
  for (const c of cases) {
    const doc = c.rules === 'default' ? readRuleSetFile(DEFAULT_RULES_FILE) : ruleSets[c.rules]
    const checked = validateRuleSet(doc, schemaOf, 30 * DAY_MS)
    if (!checked.ok) {
      t.fail(`${c.name}: rule set ${c.rules} is invalid: ${JSON.stringify(checked.errors)}`)
      continue
    }
    const records = c.records.map(({ object, set }) => ({ object, record: { ...bases[object], ...set } }))
    const decision = evaluateRecords(checked.ruleSet, registry, records, STATE).at(-1) as Decision
    const ids = (hits: { rule_id: string }[]) => hits.map((h) => h.rule_id)
    t.match(decision, { decision: c.expect.decision, score: c.expect.score, stopped_by: c.expect.stopped_by ?? null }, `${c.name}: decision`)
    t.same(ids(decision.fired), c.expect.fired, `${c.name}: live hits in order`)
    t.same(ids(decision.shadow_hits), c.expect.shadow_hits ?? [], `${c.name}: shadow hits`)
    t.same(ids(decision.errors), c.expect.errors ?? [], `${c.name}: error outcomes`)
    if (c.expect.tags) t.same(decision.tags, c.expect.tags, `${c.name}: tags`)
    for (const id of c.expect.not_evaluated ?? []) t.notOk(ids(decision.evaluations).includes(id), `${c.name}: ${id} not evaluated`)
    for (const [id, values] of Object.entries(c.expect.features ?? {})) {
      t.same(decision.fired.find((h) => h.rule_id === id)?.features, values, `${c.name}: ${id} reports its features`)
    }
    for (const e of decision.errors) t.ok(e.message.length > 0, `${c.name}: ${e.rule_id} says why it failed`)
  }
})

t.test('invalid rule sets from fixtures/cases/rules-invalid.json are refused with every problem and its position', async (t) => {
  const { schemaOf } = schemas(t)
  const { base, cases } = fixture('rules-invalid.json') as {
    base: Record<string, unknown>
    cases: { name: string; rules: Record<string, unknown>[]; thresholds?: unknown; errors: [string, string][] }[]
  }
  for (const c of cases) {
    const doc = { ...(c.thresholds ? { thresholds: c.thresholds } : {}), rules: c.rules.map((set) => ({ ...base, ...set })) }
    const result = validateRuleSet(doc, schemaOf, 30 * DAY_MS)
    if (result.ok) {
      t.fail(`${c.name}: accepted`)
      continue
    }
    for (const [pointer, message] of c.errors) {
      const found = result.errors.find((e: FieldError) => e.pointer === pointer && e.message.includes(message))
      t.ok(found, `${c.name}: ${pointer} "${message}" in ${JSON.stringify(result.errors)}`)
    }
  }
})

t.test('the rule set is versioned in SQLite: only what changed gets a new version', async (t) => {
  const { db, registry } = schemas(t)
  const store = new RuleStore(db)
  const opts = { registry, actor: 'key_test', retentionDays: 30 }
  const base = { id: 'big', name: 'Big', object: 'transaction', order: 1, when: 'record.amount > 100.0', score: 10 }
  const other = { ...base, id: 'other', order: 2 }
  const first = saveRuleSet(store, { rules: [base, other] }, opts)
  t.match(first.ruleSet, {
    version: 1,
    created_by: 'key_test',
    rules: [{ id: 'big', version: 1, severity: 'medium', mode: 'live', enabled: true }, { id: 'other' }],
  })
  t.same(saveRuleSet(store, { rules: [base, other] }, opts).changes, [], 'the same rule set again changes nothing')
  t.equal(store.currentVersion(), 1)
  const second = saveRuleSet(store, { rules: [{ ...base, score: 20 }] }, opts)
  t.same(second.changes, [
    { rule_id: 'big', change: 'changed', version: 2 },
    { rule_id: 'other', change: 'removed', version: 2 },
  ])
  t.match(second.ruleSet, { version: 2, rules: [{ id: 'big', version: 2, score: 20 }] })
  t.equal(second.ruleSet.rules.length, 1)
  t.match(
    store.history('other').map((r) => [r.version, r.removed]),
    [
      [1, false],
      [2, true],
    ],
  )
  const third = saveRuleSet(store, { rules: [{ ...base, score: 20 }, other] }, opts)
  t.same(third.changes, [{ rule_id: 'other', change: 'added', version: 3 }], 'a removed rule comes back with a new version')
  t.throws(() => saveRuleSet(store, { rules: [{ ...base, when: 'record.amount >' }] }, opts), { code: 'SLUICE_INVALID_RULES' })
  t.equal(store.currentVersion(), 3, 'an invalid rule set saves nothing')
  const audit = db.prepare("SELECT count(*) AS n FROM audit_log WHERE action = 'rules.new_version'").get() as { n: number }
  t.equal(audit.n, 3, 'every version is in the audit log')
})

t.test('the default rule set flags each fraud pattern of the generator and blocks little normal traffic', async (t) => {
  const { registry, schemaOf } = schemas(t)
  const checked = validateRuleSet(readRuleSetFile(DEFAULT_RULES_FILE), schemaOf, 30 * DAY_MS)
  if (!checked.ok) return t.fail(JSON.stringify(checked.errors))
  const records = [...generate({ seed: 42, accounts: 200, days: 14, fraudShare: 0.08 })]
  const decisions = evaluateRecords(checked.ruleSet, registry, records, STATE)
  const flagged = new Map<string, number>()
  let normal = 0
  let normalBlocked = 0
  const failures = new Set<string>()
  decisions.forEach((d, i) => {
    const scenario = (records[i].record.metadata as { scenario?: string } | null)?.scenario
    if (!scenario) {
      normal++
      // Blocks on a frozen account are right: the generator declines every payment on one.
      if (d.decision === 'block' && !d.fired.some((h) => h.rule_id === 'account-closed-or-frozen')) normalBlocked++
    } else if (d.decision !== 'approve') flagged.set(scenario, (flagged.get(scenario) ?? 0) + 1)
    for (const e of d.errors) failures.add(`${e.rule_id}: ${e.message}`)
  })
  t.same([...failures], [], 'no rule of the default set fails on generated records')
  for (const scenario of FRAUD_SCENARIOS) t.ok((flagged.get(scenario) ?? 0) > 0, `${scenario}: flagged ${flagged.get(scenario) ?? 0} times`)
  t.ok(normalBlocked / normal < 0.001, `${normalBlocked} of ${normal} normal records blocked`)
})
