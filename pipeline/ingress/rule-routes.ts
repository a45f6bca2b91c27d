import { setTimeout as sleep } from 'node:timers/promises'
import type { NatsConnection } from '@nats-io/transport-node'
import { type Static, Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { DecisionWatch, saveRuleSet, testRuleSet } from '../../rules/index.ts'
import { RULE_ID_PATTERN, RuleDefinitionSchema, type RuleStore, ThresholdsSchema } from '../../storage/index.ts'
import type { SluiceConfig } from '../config.ts'
import { SluiceError } from '../errors.ts'
import { SUBJECTS } from '../streams.ts'
import type { IngressDeps } from './app.ts'
import { ObjectParams, problem } from './route-schemas.ts'

/** What the rule routes and `?decision=sync` need from the rest of the process. */
export interface RuleApi {
  store: RuleStore
  /** Tells every rule stage that a new rule set version is on file. */
  announceChange(version: number): void
  /** Starts watching for the decision on a record about to be published (`?decision=sync`). */
  watchDecision(object: string, recordId: string): DecisionWatch
  /** The sync answer for the watched record: its decision, or pending after `rules.syncTimeoutMs`. */
  syncDecision(watch: DecisionWatch): Promise<SyncDecision>
}

const DecisionName = Type.Union([Type.Literal('approve'), Type.Literal('review'), Type.Literal('block')])
const FiredRule = Type.Object({
  rule_id: Type.String(),
  rule_version: Type.Integer(),
  name: Type.String(),
  score: Type.Number(),
  severity: Type.String(),
  tags: Type.Array(Type.String()),
  features: Type.Record(Type.String(), Type.Number(), { description: 'the velocity features the rule reads, with their values' }),
})

/** The `decision` of a `POST /<object>?decision=sync` answer. */
export const SyncDecisionSchema = Type.Union(
  [
    Type.Object({
      status: Type.Literal('decided'),
      decision: DecisionName,
      score: Type.Number(),
      tags: Type.Array(Type.String()),
      fired: Type.Array(FiredRule, { description: 'live rules that matched, in evaluation order' }),
      rule_set_version: Type.Integer(),
    }),
    Type.Object(
      { status: Type.Literal('pending') },
      { description: 'the rule stage did not answer within rules.syncTimeoutMs; the record is stored all the same' },
    ),
  ],
  { description: 'with decision=sync: the rule stage decision on the record' },
)
export type SyncDecision = Static<typeof SyncDecisionSchema>

export function ruleApi(opts: { store: RuleStore; nc: NatsConnection; config: SluiceConfig }): RuleApi {
  const { store, nc, config } = opts
  return {
    store,
    announceChange: (version) => nc.publish(SUBJECTS.rulesChanged, JSON.stringify({ version })),
    watchDecision: (object, recordId) => new DecisionWatch(nc, object, recordId),
    async syncDecision(watch) {
      const decision = await watch.result(config.rules.syncTimeoutMs)
      if (!decision) return { status: 'pending' }
      const { score, tags, rule_set_version } = decision
      const fired = decision.fired.map(({ mode: _mode, ...hit }) => hit)
      return { status: 'decided', decision: decision.decision, score, tags, fired, rule_set_version }
    },
  }
}

const StoredRuleSchema = Type.Intersect([
  RuleDefinitionSchema,
  Type.Object({ version: Type.Integer(), updated_at: Type.String(), updated_by: Type.String({ description: 'API key id, cli or system' }) }),
])
const RuleSetSchema = Type.Object({
  version: Type.Integer({ description: '0 before any rule set was saved' }),
  created_at: Type.Union([Type.String(), Type.Null()]),
  created_by: Type.Union([Type.String(), Type.Null()]),
  thresholds: Type.Record(Type.String(), ThresholdsSchema, {
    description: 'per object; an object not listed uses review 50, block 100',
  }),
  rules: Type.Array(StoredRuleSchema),
})
const RuleChangeSchema = Type.Object({
  rule_id: Type.String(),
  change: Type.Union([Type.Literal('added'), Type.Literal('changed'), Type.Literal('removed')]),
  version: Type.Integer(),
})
const PlainRecordSchema = Type.Object({ object: ObjectParams.properties.object, record: Type.Record(Type.String(), Type.Unknown()) })
const RuleTestBody = Type.Object(
  {
    rules: Type.Optional(Type.Unknown({ description: 'a rule set document (docs/rules.md); default: the live rule set' })),
    record: Type.Record(Type.String(), Type.Unknown(), { description: 'the record to decide on' }),
    object: Type.String({ ...ObjectParams.properties.object, default: 'transaction' }),
    history: Type.Array(PlainRecordSchema, {
      default: [],
      maxItems: 10_000,
      description: 'records taken in first, in order (the account, its activity, earlier transactions), like `sluice rules test --before`',
    }),
  },
  { additionalProperties: false },
)
const TestDecisionSchema = Type.Record(Type.String(), Type.Unknown(), {
  description:
    'the decision the rule stage would make: decision, score, tags, fired, shadow_hits, errors, evaluations (every rule with its outcome), features (docs/rules.md)',
})
const StatsQuery = Type.Object({ since_minutes: Type.Integer({ minimum: 1, maximum: 60 * 24 * 90, default: 1440 }) })
const AlertsQuery = Type.Object({
  object: Type.Optional(ObjectParams.properties.object),
  rule: Type.Optional(Type.String({ pattern: RULE_ID_PATTERN })),
  record_id: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: 'only the hits on this record' })),
  mode: Type.Union([Type.Literal('live'), Type.Literal('shadow')], { default: 'live' }),
  limit: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }),
  cursor: Type.Optional(Type.String({ pattern: '^[0-9]+$', description: 'next_cursor of the previous page' })),
})
const StoredAlertSchema = Type.Object({
  record_id: Type.String(),
  record_seq: Type.Integer(),
  object: Type.String(),
  account_id: Type.Union([Type.String(), Type.Null()]),
  rule_id: Type.String(),
  rule_version: Type.Integer(),
  mode: Type.String(),
  score: Type.Number(),
  severity: Type.String(),
  tags: Type.Array(Type.String()),
  decision: DecisionName,
  features: Type.Record(Type.String(), Type.Number()),
  record_time: Type.String(),
  evaluated_at: Type.String(),
})
const DecisionParams = Type.Object({ record_id: Type.String({ minLength: 1, maxLength: 200, description: 'the record id ingest answered with' }) })
const DecisionQuery = Type.Object({
  wait_ms: Type.Integer({
    minimum: 0,
    maximum: 10_000,
    default: 0,
    description: 'when there is no decision yet, wait up to this long for it: the rule stage decides a moment after the record is stored',
  }),
})
const StoredDecisionSchema = Type.Object({
  record_id: Type.String(),
  record_seq: Type.Integer({ description: "the record's sequence in SLUICE_RECORDS" }),
  object: Type.String(),
  account_id: Type.Union([Type.String(), Type.Null()]),
  decision: DecisionName,
  score: Type.Number({ description: "the sum of the live hits' scores" }),
  tags: Type.Array(Type.String()),
  fired: Type.Array(Type.String(), { description: 'ids of the live rules that matched, in evaluation order' }),
  shadow_hits: Type.Array(Type.String(), { description: 'ids of the shadow rules that matched (no score, no alert)' }),
  stopped_by: Type.Union([Type.String(), Type.Null()], { description: 'the stop rule that ended evaluation' }),
  rule_set_version: Type.Integer(),
  evaluate_rules: Type.Boolean({ description: 'false for a historical backfill: recorded, no alert raised' }),
  record_time: Type.String(),
  received_at: Type.String(),
  evaluated_at: Type.String(),
  latency_ms: Type.Number({ description: "from the record's receipt to its decision" }),
})
/** How often `?wait_ms=` asks the analytics store again: the rule outcome sink writes every 100 ms or so. */
const DECISION_POLL_MS = 200
const RuleStatsSchema = Type.Object({
  since: Type.String(),
  decisions: Type.Object({ approve: Type.Integer(), review: Type.Integer(), block: Type.Integer() }),
  rules: Type.Array(
    Type.Object({
      rule_id: Type.String(),
      evaluations: Type.Integer(),
      hits: Type.Integer(),
      shadow_hits: Type.Integer(),
      errors: Type.Integer(),
      mean_micros: Type.Union([Type.Number(), Type.Null()]),
      max_micros: Type.Union([Type.Number(), Type.Null()]),
    }),
  ),
})

/** The rule set (admin), and what the rule stage made of the records (read). */
export function registerRuleRoutes(app: FastifyInstance, deps: IngressDeps): void {
  const { rules, registry, queries, config } = deps

  app.get(
    '/rules',
    {
      config: { scope: 'admin' },
      schema: { tags: ['rules'], summary: 'The live rule set: every rule with its version, and the decision thresholds', response: { 200: RuleSetSchema } },
    },
    async () => rules.store.current(),
  )

  app.put(
    '/rules',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['rules'],
        summary: 'Replace the whole rule set; changed, added and removed rules get a new version',
        body: Type.Unknown({ description: 'a rule set document {thresholds, rules: [...]} (docs/rules.md); checked like `sluice rules apply`' }),
        response: { 200: Type.Intersect([RuleSetSchema, Type.Object({ changes: Type.Array(RuleChangeSchema) })]), 400: problem },
      },
    },
    async (request) => {
      const { ruleSet, changes } = saveRuleSet(rules.store, request.body, {
        registry,
        actor: request.apiKey?.id ?? 'unknown',
        retentionDays: config.streams.recordRetentionDays,
      })
      if (changes.length > 0) rules.announceChange(ruleSet.version)
      return { ...ruleSet, changes }
    },
  )

  app.post<{ Body: Static<typeof RuleTestBody> }>(
    '/rules/test',
    {
      config: { scope: 'admin' },
      schema: {
        tags: ['rules'],
        summary: 'The decision a rule set (default: the live one) makes on one record; what `sluice rules test` does, nothing is stored',
        body: RuleTestBody,
        response: { 200: TestDecisionSchema, 400: problem },
      },
    },
    async (request) => {
      const { rules: doc, record, object, history } = request.body
      return testRuleSet(
        doc ?? rules.store.current(),
        { object, record, before: history },
        {
          registry,
          retentionDays: config.streams.recordRetentionDays,
          activityWindowMs: config.rules.activityWindowHours * 3_600_000,
          lateMs: config.rules.lateArrivalMinutes * 60_000,
        },
      )
    },
  )

  app.get<{ Querystring: Static<typeof StatsQuery> }>(
    '/rules/stats',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['rules'],
        summary: 'Decisions and per-rule counters (evaluations, hits, errors, expression time) over the last minutes',
        querystring: StatsQuery,
        response: { 200: RuleStatsSchema, 503: problem },
      },
    },
    async (request) => queries.request(SUBJECTS.queryRuleStats, { since_ms: Date.now() - request.query.since_minutes * 60_000 }),
  )

  app.get<{ Querystring: Static<typeof AlertsQuery> }>(
    '/alerts',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['rules'],
        summary: 'Stored rule hits, newest first',
        querystring: AlertsQuery,
        response: { 200: Type.Object({ alerts: Type.Array(StoredAlertSchema), next_cursor: Type.Optional(Type.String()) }), 400: problem, 503: problem },
      },
    },
    async (request) => {
      const { object, rule, record_id, mode, limit, cursor } = request.query
      return queries.request(SUBJECTS.queryAlerts, { object, rule_id: rule, record_id, mode, limit, before: cursor === undefined ? undefined : Number(cursor) })
    },
  )

  app.get<{ Params: Static<typeof DecisionParams>; Querystring: Static<typeof DecisionQuery> }>(
    '/decisions/:record_id',
    {
      config: { scope: 'read' },
      schema: {
        tags: ['rules'],
        summary: "The rule stage's decision on one record: decision, score, the rules that matched, rule set version, when and how fast",
        params: DecisionParams,
        querystring: DecisionQuery,
        response: { 200: StoredDecisionSchema, 400: problem, 404: problem, 503: problem },
      },
    },
    async (request) => {
      const { record_id } = request.params
      const deadline = Date.now() + request.query.wait_ms
      for (;;) {
        const decision = await queries.request(SUBJECTS.queryDecision, { record_id })
        if (decision) return decision
        const left = deadline - Date.now()
        // A client that hung up no longer waits.
        if (left <= 0 || request.socket.destroyed)
          throw new SluiceError(
            'SLUICE_DECISION_NOT_FOUND',
            `there is no decision on record ${record_id} yet: the rule stage decides a moment after a record is stored, and not at all while no rules role runs`,
          )
        await sleep(Math.min(DECISION_POLL_MS, left))
      }
    },
  )
}
