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
} as const

export const SUBJECTS = {
  /**
   * Where an accepted record of `object` is published: `sluice.records.<object>.<partition>`. The partition
   * (0..RECORD_PARTITIONS-1) is a hash of the record's account (or its id), so a stage that must see every
   * record of one account (the rule stage's windows) can split the work by partition.
   */
  record: (object: string, partition: number) => `sluice.records.${object}.${partition}`,
  /** A rule stage decision on one record (also kept in SLUICE_DECISIONS); sync ingest waits on it. */
  decision: (object: string, recordId: string) => `sluice.decisions.${object}.${recordId}`,
  /** Prefix of the request/reply subjects served by the role that owns the DuckDB file. */
  queryRecords: 'sluice.query.records',
  queryStats: 'sluice.query.stats',
  /** Asks the analytics store which stored values a proposed schema could not hold. */
  querySchemaConflicts: 'sluice.query.schema-conflicts',
  /** How many records of a batch job the analytics store holds. */
  queryJobStored: 'sluice.query.job-stored',
  /** A new schema version of `object` (JSON of the version). */
  schemaChanged: (object: string) => `sluice.schema.changed.${object}`,
} as const

/** How many partitions the record subjects are split into; fixed, since changing it would move accounts between partitions. */
export const RECORD_PARTITIONS = 16

/** Durable pull consumers, one per consuming stage. */
export const CONSUMERS = {
  analyticsSink: { stream: STREAMS.records.name, durable: 'sink-analytics' },
} as const

/** Queue group for the query responders, so a request is answered once. */
export const QUERY_QUEUE = 'sluice-query'

/** Message headers Sluice sets beside JetStream's own. */
export const HEADERS = {
  recordId: 'Sluice-Record-Id',
} as const
