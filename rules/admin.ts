import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { SluiceError } from '../pipeline/errors.ts'
import type { Decision, RuleChange, RuleSetDoc, RuleSetVersion, RuleStore, SchemaRegistry } from '../storage/index.ts'
import { type CompiledRuleSet, validateRuleSet } from './rule-set.ts'
import { evaluateRecords, type PlainRecord, type StateOptions } from './rule-state.ts'

/** The rule set a fresh Sluice starts with (docs/rules.md describes each rule). */
export const DEFAULT_RULES_FILE = fileURLToPath(new URL('../fixtures/rules/default.json', import.meta.url))

const DAY_MS = 86_400_000

export interface SaveOptions {
  registry: SchemaRegistry
  /** Who saves it: an API key id, `cli` or `system`. */
  actor: string
  /** Windows may not reach further back than the record stream keeps records. */
  retentionDays: number
}

/** Reads a rule set document from a JSON file; a file that is not JSON is an invalid rule set. */
export function readRuleSetFile(path: string): unknown {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch (cause) {
    throw new SluiceError('SLUICE_INVALID_RULES', `cannot read rule set ${path}: ${(cause as Error).message}`, { cause })
  }
}

/** The checks a rule set must pass before it is saved or replayed; throws SLUICE_INVALID_RULES naming every problem. */
export function checkRuleSet(input: unknown, opts: Omit<SaveOptions, 'actor'>): { doc: RuleSetDoc; ruleSet: CompiledRuleSet } {
  const checked = validateRuleSet(input, (object) => opts.registry.current(object)?.schema, opts.retentionDays * DAY_MS)
  if (checked.ok) return checked
  const where = checked.errors.map((e) => e.pointer || '/').join(', ')
  throw new SluiceError('SLUICE_INVALID_RULES', `the rule set is invalid; problems at: ${where}`, { errors: checked.errors })
}

/** What `sluice rules test` and POST /rules/test evaluate: a record, and the records taken in before it. */
export interface RuleTest {
  object: string
  record: Record<string, unknown>
  /** The account, its activity, earlier transactions: taken in first, in order. Default none. */
  before?: readonly PlainRecord[]
}

/**
 * The decision the rule stage would make on one record under the rule set document `input`, with fresh
 * state holding only `test.before`; throws SLUICE_INVALID_RULES like checkRuleSet.
 */
export function testRuleSet(input: unknown, test: RuleTest, opts: Omit<SaveOptions, 'actor'> & StateOptions): Decision {
  const { ruleSet } = checkRuleSet(input, opts)
  const decisions = evaluateRecords(ruleSet, opts.registry, [...(test.before ?? []), { object: test.object, record: test.record }], opts)
  return decisions[decisions.length - 1]
}

/**
 * Checks and saves a whole rule set (what PUT /rules and `sluice rules apply` do). An invalid one is refused
 * with SLUICE_INVALID_RULES naming every problem, expressions with their line and column.
 */
export function saveRuleSet(store: RuleStore, input: unknown, opts: SaveOptions): { ruleSet: RuleSetVersion; changes: RuleChange[] } {
  const { ruleSet, changes } = store.apply(checkRuleSet(input, opts).doc, { created_by: opts.actor, reason: 'manual' })
  return { ruleSet, changes }
}

/** Saves the default rule set when no rule set was ever saved (first start); true when it did. */
export function loadDefaultRules(store: RuleStore, opts: Omit<SaveOptions, 'actor'>): boolean {
  if (store.currentVersion() > 0) return false
  const { doc } = checkRuleSet(readRuleSetFile(DEFAULT_RULES_FILE), opts)
  // expectedVersion 0: of several processes starting on one data dir at once, one saves it.
  return store.apply(doc, { created_by: 'system', reason: 'default', expectedVersion: 0 }).applied
}
