/**
 * The one place that names every JetStream stream, subject and consumer Sluice uses.
 * Subscribers outside Sluice rely on these names: they are part of the public interface (README).
 */
export const STREAMS = {
  /** Every accepted record, one subject per object type. Its retention is the replay window. */
  records: { name: 'SLUICE_RECORDS', subjects: ['sluice.records.>'] },
  /** Schema versions as they are made, `sluice.schema.changed.<object>`: the audit trail subscribers can follow. */
  schemas: { name: 'SLUICE_SCHEMAS', subjects: ['sluice.schema.>'] },
  /** Rule hits, `alerts.<object>.<rule_id>`. */
  alerts: { name: 'SLUICE_ALERTS', subjects: ['alerts.>'] },
  /**
   * The rule stage's decisions, many records to a message (`sluice.decision-batches.<partition>`, a JSON array):
   * one stored message per record would cost JetStream more than the decision. The rule outcome sink stores them.
   */
  decisions: { name: 'SLUICE_DECISIONS', subjects: ['sluice.decision-batches.>'] },
  /** Alerts a `sluice replay --publish` raised, `replay.alerts.<object>.<rule_id>`: apart from the live ones. */
  replay: { name: 'SLUICE_REPLAY', subjects: ['replay.>'] },
} as const

/** Most decisions in one SLUICE_DECISIONS message, well within NATS's default 1 MB payload. */
export const MAX_BATCH_DECISIONS = 200

/** Headers of a SLUICE_DECISIONS message beside its JSON array of decisions. */
export const DECISION_BATCH_HEADERS = {
  /** A batch job's decisions leave out their evaluations: their per-rule counts, as JSON RuleCounterRow[]. */
  counters: 'Sluice-Rule-Counters',
} as const

export const SUBJECTS = {
  /**
   * Where an accepted record of `object` is published: `sluice.records.<object>.<partition>`. The partition
   * (0..RECORD_PARTITIONS-1) is a hash of the record's account (or its id), so a stage that must see every
   * record of one account (the rule stage's windows) can split the work by partition.
   */
  record: (object: string, partition: number) => `sluice.records.${object}.${partition}`,
  /**
   * Where a batch job publishes its records: `sluice.records.<object>.job.<partition>`, a lane of the partition's
   * own, so that the rule stage takes real-time records in ahead of a job's (RULE_CONSUMERS).
   */
  jobRecords: (object: string, partition: number) => `sluice.records.${object}.job.${partition}`,
  /** Every record of one object, of every partition and lane. */
  recordsOf: (object: string) => `sluice.records.${object}.>`,
  /**
   * A rule stage decision on one record, on core NATS once its batch is stored in SLUICE_DECISIONS: for live
   * subscribers and sync ingest, which waits on it.
   */
  decision: (object: string, recordId: string) => `sluice.decisions.${object}.${recordId}`,
  /** The decisions of one rule stage batch of a partition's records, stored in SLUICE_DECISIONS. */
  decisionBatch: (partition: number) => `sluice.decision-batches.${partition}`,
  /** A live rule hit (docs/rules.md has the alert's JSON schema). */
  alert: (object: string, ruleId: string) => `alerts.${object}.${ruleId}`,
  replayAlert: (object: string, ruleId: string) => `replay.alerts.${object}.${ruleId}`,
  /** Announces a new rule set version; every rule stage reloads the rules on file. */
  rulesChanged: 'sluice.rules.changed',
  /** Prefix of the request/reply subjects served by the role that owns the DuckDB file. */
  queryRecords: 'sluice.query.records',
  queryStats: 'sluice.query.stats',
  /** Asks the analytics store which stored values a proposed schema could not hold. */
  querySchemaConflicts: 'sluice.query.schema-conflicts',
  /** How many records of a batch job the analytics store holds. */
  queryJobStored: 'sluice.query.job-stored',
  /** Per-rule counters and decision counts, and stored alerts (rule outcome store). */
  queryRuleStats: 'sluice.query.rule-stats',
  queryAlerts: 'sluice.query.alerts',
  /** The stored decision on one record. */
  queryDecision: 'sluice.query.decision',
  /** A new schema version of `object` (JSON of the version). */
  schemaChanged: (object: string) => `sluice.schema.changed.${object}`,
} as const

/** The object a record subject names: `sluice.records.<object>[.job].<partition>`. */
export function objectOfSubject(subject: string): string {
  return subject.split('.')[2]
}

/** The partition a record subject names. */
export function partitionOfSubject(subject: string): number {
  return Number(subject.slice(subject.lastIndexOf('.') + 1))
}

/** A partition's records arrive in two lanes: real time (POSTs) and batch jobs. */
export type RecordLane = 'live' | 'job'

/** The lane a record subject is in (SUBJECTS.record or SUBJECTS.jobRecords). */
export function laneOfSubject(subject: string): RecordLane {
  return subject.split('.').length === 5 ? 'job' : 'live'
}

/** How many partitions the record subjects are split into; fixed, since changing it would move accounts between partitions. */
export const RECORD_PARTITIONS = 16

/** Durable pull consumers, one per consuming stage. */
export const CONSUMERS = {
  analyticsSink: { stream: STREAMS.records.name, durable: 'sink-analytics' },
  ruleOutcomeSink: { stream: STREAMS.decisions.name, durable: 'sink-rule-outcomes' },
} as const

/**
 * The rule stage's durable consumers, one per record partition and lane (a NATS 2.9 consumer has one filter
 * subject). A rule worker owns a set of partitions and consumes theirs; the stage makes and remakes them itself.
 * A batch job's lane has its own consumer so that a job's backlog does not hold up real-time records, which
 * JetStream would otherwise deliver only after every job message stored before them.
 */
export const RULE_CONSUMERS = {
  durable: (partition: number, lane: RecordLane) => `rules-p${String(partition).padStart(2, '0')}${lane === 'job' ? '-jobs' : ''}`,
  /** What every rule consumer's name starts with. */
  prefix: 'rules-p',
  filter: (partition: number, lane: RecordLane) => (lane === 'job' ? `sluice.records.*.job.${partition}` : `sluice.records.*.${partition}`),
} as const

/** Every lane, live first: the rule stage starts a partition's live consumer ahead of its job lane's. */
export const RECORD_LANES: readonly RecordLane[] = ['live', 'job']

/** The durable name of every rule consumer, of every partition and lane. */
export const EVERY_RULE_CONSUMER: readonly string[] = Array.from({ length: RECORD_PARTITIONS }, (_, p) =>
  RECORD_LANES.map((lane) => RULE_CONSUMERS.durable(p, lane)),
).flat()

/** Queue group for the query responders, so a request is answered once. */
export const QUERY_QUEUE = 'sluice-query'
