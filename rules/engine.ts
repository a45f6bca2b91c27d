import type { Decision, DecisionName, RuleEvaluation, RuleFailure, RuleHit, Thresholds } from '../storage/index.ts'
import { type ExpressionContext, runtimeErrorMessage } from './expressions.ts'
import type { CompiledRule, CompiledRuleSet } from './rule-set.ts'

/** What the rules of one object made of one record: Decision without where the record came from. */
export type RuleSetOutcome = Pick<
  Decision,
  'decision' | 'score' | 'tags' | 'fired' | 'shadow_hits' | 'errors' | 'stopped_by' | 'evaluations' | 'rule_set_version'
>

export function decide(score: number, thresholds: Thresholds): DecisionName {
  if (score >= thresholds.block) return 'block'
  if (score >= thresholds.review) return 'review'
  return 'approve'
}

function hitOf(rule: CompiledRule, features: Record<string, number>): RuleHit {
  const read: Record<string, number> = {}
  for (const name of rule.reads) if (name in features) read[name] = features[name]
  return {
    rule_id: rule.id,
    rule_version: rule.version,
    name: rule.name,
    mode: rule.mode,
    score: rule.score,
    severity: rule.severity,
    tags: rule.tags,
    features: read,
  }
}

/**
 * Runs the enabled rules of `object` in order on one record. A live match adds its score and tags; a shadow
 * match is recorded only; a live `stop` match ends evaluation; an expression that throws or answers anything
 * but a bool is that rule's `error` outcome, and evaluation goes on.
 */
export function evaluateRules(ruleSet: CompiledRuleSet, object: string, context: ExpressionContext): RuleSetOutcome {
  const fired: RuleHit[] = []
  const shadowHits: RuleHit[] = []
  const errors: RuleFailure[] = []
  const evaluations: RuleEvaluation[] = []
  const tags = new Set<string>()
  let score = 0
  let stoppedBy: string | null = null
  for (const rule of ruleSet.rulesFor(object)) {
    const started = performance.now()
    let outcome: RuleEvaluation['outcome']
    try {
      const result = rule.evaluate(context)
      if (typeof result !== 'boolean') throw new Error(`the expression answered ${result === null ? 'null' : typeof result}, not a bool`)
      outcome = result ? (rule.mode === 'live' ? 'hit' : 'shadow_hit') : 'miss'
    } catch (err) {
      outcome = 'error'
      errors.push({ rule_id: rule.id, rule_version: rule.version, message: runtimeErrorMessage(err) })
    }
    evaluations.push({ rule_id: rule.id, rule_version: rule.version, outcome, micros: Math.round((performance.now() - started) * 1000) })
    if (outcome === 'shadow_hit') shadowHits.push(hitOf(rule, context.features))
    if (outcome !== 'hit') continue
    fired.push(hitOf(rule, context.features))
    score += rule.score
    for (const tag of rule.tags) tags.add(tag)
    if (rule.stop) {
      stoppedBy = rule.id
      break
    }
  }
  return {
    decision: decide(score, ruleSet.thresholdsFor(object)),
    score,
    tags: [...tags],
    fired,
    shadow_hits: shadowHits,
    errors,
    stopped_by: stoppedBy,
    evaluations,
    rule_set_version: ruleSet.version,
  }
}
